"""``rs-transfer run``: one task x backbone x weights x protocol x seed -> WORK_DIR/results.json."""
from __future__ import annotations

import argparse
from typing import Any

from rs_transfer.runner.distributed import LAUNCHERS   # light: no torch for --help

HELP = "fine-tune / probe one backbone + weights on one task; writes results.json"
DESCRIPTION = """Run one experiment on the shared mmengine runner and write WORK_DIR/results.json atomically.

The task's config in configs/ is completed with the backbone's architecture, the weights (key mapping and input
normalisation are automatic), seed, launcher and hooks (checkpoints, console ETA, TensorBoard).

examples:
  rs-transfer run --task cifar100 --backbone resnetrs50 --preset mini
  rs-transfer run --task cifar100 --backbone resnet152 --weights resnet152.tv_in1k --protocol linear
  torchrun --nproc_per_node 8 -m rs_transfer.cli run --task ade20k --backbone resnetrs152 \\
      --weights resnetrs152.tf_in1k --launcher pytorch
  rs-transfer run ... --resume                       # continue an interrupted run from its last checkpoint
  rs-transfer run ... --cfg-options train_cfg.max_iters=1000 optim_wrapper.optimizer.lr=0.1

Interrupting (Ctrl-C, or SIGTERM as slurm sends before preemption) saves a checkpoint at the end of the current
iteration and prints the command that resumes; a resumed run ends with the metrics of an uninterrupted one. While
training only the newest checkpoint is kept; a finished run leaves WORK_DIR/weights.safetensors (the evaluated
model, its input normalisation in the metadata, no optimizer state) and results.json.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (`rs-transfer list tasks`)")
    p.add_argument("--backbone", required=True, help="registered model (`rs-transfer list models`)")
    p.add_argument("--weights", help="named weight source or checkpoint file (default: random initialisation)")
    p.add_argument("--normalization", metavar="NORM",
                   help="input normalisation of --weights: imagenet, unit ([0, 1] inputs, SimCLR), swav, or "
                        "MEAN,STD / M1,M2,M3,S1,S2,S3 (default: what the named source, the checkpoint's metadata "
                        "or its layout declares; else ImageNet, with a warning)")
    p.add_argument("--protocol", default="finetune", help="finetune (default), or linear / knn / fewshot where the "
                                                          "task has them")
    p.add_argument("--preset", default="paper", choices=["paper", "mini"],
                   help="paper: the documented protocol; mini: tiny generated data, seconds on a CPU (smoke test)")
    p.add_argument("--config", help="an mmengine config file to use instead of the task's own")
    p.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE", default=[],
                   help="override config entries, e.g. train_cfg.max_iters=100 (applied last)")
    p.add_argument("--backbone-options", nargs="+", metavar="KEY=VALUE", default=[],
                   help="extra ResNetRS arguments, e.g. se_ratio=0 drop_path_rate=0.1 layers=[1,1,1,1] width=0.5")
    p.add_argument("--data-root", help="dataset folder (default: the task's folder under $RS_TRANSFER_HOME/data, "
                                       "see `rs-transfer data --help`)")
    p.add_argument("--work-dir", help="output folder (default: work_dirs/<task>-<backbone>-<weights>-...)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (0..2^32-1) of the initialisation, data order and augmentation (default 0)")
    p.add_argument("--recipe", help="pre-training tasks (imagenet, kinetics400): a named training recipe that sets "
                                    "every toggle of the paper's table, architecture included (imagenet: vanilla, "
                                    "rs, rs-transfer; kinetics400: vanilla, rs); --cfg-options and "
                                    "--backbone-options still win")
    p.add_argument("--launcher", default="none", choices=LAUNCHERS,
                   help="distributed launcher (pytorch = torchrun); CPU runs use the gloo backend")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in the work dir (says which; trains from "
                        "scratch, saying so, when there is none)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="load --weights even if backbone keys differ (the log lists them)")
    p.add_argument("--trust", action="store_true",
                   help="allow full unpickling of --weights (only for files you trust)")
    p.add_argument("--shots", nargs="+", metavar="K",
                   help="protocol fewshot: images per class, e.g. 1 2 5 10 25, and/or vtab1k (= probe.shots)")
    p.add_argument("--episodes", type=int, metavar="N", help="protocol fewshot: seeded draws per K (= probe.episodes)")
    from rs_transfer.runner.tracking import add_argument as add_tracking

    add_tracking(p)
    p.add_argument("--sweep", action="store_true",
                   help="cifar100 and the transfer suite's single-label tasks: choose LR and weight decay on a "
                        "grid of 7 LRs x 8 weight decays (none, 1e-6..1e-3, divided by the LR; Kornblith et al. "
                        "2019) scored on a held-out 20%% of the training set, then "
                        "fine-tune the best on all of it and score the test set once (56 + 1 runs; WORK_DIR/sweep/ "
                        "keeps each point, reused when run again)")
    p.add_argument("--dry-run", action="store_true",
                   help="with --sweep: print the sweep's plan (each grid point's state and identity; the final run "
                        "once every point is done) and write it as WORK_DIR/plan.json, as `study sweep --dry-run`; "
                        "runs nothing")


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options, run_experiment

    cfg_options, model_overrides = parse_cfg_options(args.cfg_options), parse_cfg_options(args.backbone_options)
    if args.shots or args.episodes:   # the few-shot options are config keys (so they are part of the config hash)
        from rs_transfer.errors import UserError
        from rs_transfer.tasks._frozen import shots_option

        if args.protocol != "fewshot":
            raise UserError(f"--shots / --episodes belong to --protocol fewshot, not {args.protocol}")

        cfg_options = {**shots_option(args.shots, args.episodes), **cfg_options}
    if args.recipe:  # the recipe's toggles first, the user's own options on top
        from rs_transfer.recipes import recipe_for_task

        r_cfg, r_model = recipe_for_task(args.task, args.recipe, args.backbone, model_overrides)
        cfg_options, model_overrides = {**r_cfg, **cfg_options}, {**r_model, **model_overrides}
    kwargs: dict[str, Any] = dict(
        weights=args.weights, preset=args.preset, protocol=args.protocol, work_dir=args.work_dir, seed=args.seed,
        config=args.config, cfg_options=cfg_options, model_overrides=model_overrides, launcher=args.launcher,
        resume=args.resume, data_root=args.data_root, trust=args.trust, strict=args.strict,
        normalization=args.normalization)
    if args.dry_run:   # the one plan of the sweep, with the arguments the sweep below would get
        from rs_transfer.errors import UserError
        from rs_transfer.studies.sweep import plan_sweep

        if not args.sweep:
            raise UserError("--dry-run plans a sweep (--sweep); a single run has no plan to show")
        plan_sweep(args.task, args.backbone, **kwargs)
        return 0
    if args.sweep:
        from rs_transfer.studies.sweep import run_sweep as run_experiment  # noqa: F811  (same arguments)
    from rs_transfer.runner.tracking import parse as parse_tracking

    tracking = parse_tracking(args.tracking)
    if tracking is not None and args.sweep:   # the sweep's points and final run: one experiment
        tracking = tracking.for_study("sweep", args.work_dir or "work_dirs")
    res = run_experiment(args.task, args.backbone, **kwargs, tracking=tracking)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        label = " [MINI preset: smoke test, not a benchmark number]" if res["preset"] == "mini" else ""
        print(f"{res['task']} {res['backbone']} weights={res['weights']['source'] or 'none'} "
              f"protocol={res['protocol']}: {res['metric']} = {res['value']:.2f}{label}")
        print(f"results: {res['work_dir']}/results.json")
    return 0
