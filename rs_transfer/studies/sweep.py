"""``rs-transfer run --task cifar100 --sweep`` (also the transfer suite's single-label tasks): the fine-tuning
hyper-parameter selection of Kornblith, Shlens & Le 2019 (as SimCLR appendix B.8 also uses it) instead of the
config's single LR / weight-decay point.

Grid: 7 learning rates log-spaced over 1e-4..0.1 x 7 weight decays log-spaced over 1e-6..1e-3 (``LR_GRID``,
``WD_GRID``; ``--preset mini``: the 2 x 2 corners ``MINI_GRID`` of a smaller range, a smoke test). Each point
fine-tunes on the training set minus a held-out 20% (``holdout``; the split rule of the linear probe,
:func:`rs_transfer.tasks.classification.holdout_split`, seeded by ``--seed``) and is scored on that held-out 20% with the
test transform; the best point (ties: the first in grid order, smaller LR and weight decay first) is then fine-tuned
on all training images and scored on the test set, which nothing else ever saw. The final run's ``results.json``
records the whole grid under ``sweep``. Each grid point is a run of its own under ``WORK_DIR/sweep/``; a point
whose ``results.json`` recorded the configuration it would run now (the one reuse rule,
:mod:`rs_transfer.studies.reuse`) is reused, so an interrupted sweep continues where it stopped.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.runner.tracking import add_argument as add_tracking

# CIFAR-100 and the transfer suite's single-label datasets (their TvClassDataset takes the same subset keys; VOC2007's
# multi-label fine-tune is left out: not tried through the sweep).
SWEEP_TASKS = ("cifar100", "food101", "cifar10", "sun397", "stanford-cars", "fgvc-aircraft", "dtd", "oxford-pets",
               "caltech101", "flowers102")
LR_GRID = tuple(round(10 ** (-4 + 3 * i / 6), 10) for i in range(7))   # 1e-4, 3.16e-4, ..., 0.1
WD_GRID = tuple(round(10 ** (-6 + 3 * i / 6), 12) for i in range(7))   # 1e-6, 3.16e-6, ..., 1e-3
MINI_GRID = ((1e-3, 1e-2), (1e-6, 1e-4))


def _cell_options(lr: float, wd: float, holdout: float, seed: int) -> dict[str, Any]:
    return {"optim_wrapper.optimizer.lr": lr, "optim_wrapper.optimizer.weight_decay": wd,
            "train_dataloader.dataset.subset": "fit", "train_dataloader.dataset.holdout": holdout,
            "train_dataloader.dataset.holdout_seed": seed,
            "val_dataloader.dataset.split": "train", "val_dataloader.dataset.subset": "holdout",
            "val_dataloader.dataset.holdout": holdout, "val_dataloader.dataset.holdout_seed": seed}


def _points(task: str, backbone: str, *, work_dir: str | Path | None, preset: str, seed: int,
            cfg_options: dict[str, Any] | None, holdout: float,
            grid: tuple[tuple[float, ...], tuple[float, ...]] | None, kwargs: dict[str, Any]
            ) -> tuple[Path, dict[str, Any], list[tuple[float, float, dict[str, Any]]]]:
    """``(root, user cfg_options, [(lr, wd, run_experiment kwargs of the point)])``, the arguments checked: one
    list for the sweep and its plan, so that what ``--dry-run`` shows is what the sweep runs and reuses."""
    if task not in SWEEP_TASKS:
        raise UserError(f"--sweep is implemented for {', '.join(SWEEP_TASKS)} (Kornblith et al.'s fine-tuning "
                        f"protocol), not {task!r}")
    if kwargs.get("protocol", "finetune") != "finetune" or kwargs.get("resume"):
        raise UserError("--sweep runs the finetune protocol from scratch (a stopped sweep reuses finished points "
                        "when run again); drop --protocol / --resume")
    lrs, wds = grid or (MINI_GRID if preset == "mini" else (LR_GRID, WD_GRID))
    user = dict(cfg_options or {})
    clash = sorted(k for k in user if k in _cell_options(0, 0, 0, 0))
    if clash:
        raise UserError(f"--sweep sets {', '.join(clash)} itself; drop them from --cfg-options")
    root = Path(work_dir or Path("work_dirs") / f"{task}-{backbone}-sweep-{preset}-seed{seed}").resolve()
    return root, user, [(lr, wd, dict(preset=preset, seed=seed, work_dir=root / "sweep" / f"lr{lr:g}_wd{wd:g}",
                                      cfg_options={**user, **_cell_options(lr, wd, holdout, seed)}, **kwargs))
                        for lr in lrs for wd in wds]


def _final_options(user: dict[str, Any], lr: float, wd: float) -> dict[str, Any]:
    return {**user, "optim_wrapper.optimizer.lr": lr, "optim_wrapper.optimizer.weight_decay": wd}


def run_sweep(task: str, backbone: str, *, work_dir: str | Path | None = None, preset: str = "paper",
              seed: int = 0, cfg_options: dict[str, Any] | None = None, holdout: float = 0.2,
              grid: tuple[tuple[float, ...], tuple[float, ...]] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Grid on the held-out split, then the best point on train -> test. ``kwargs`` go to every
    :func:`rs_transfer.runner.run_experiment` call (weights, model_overrides, launcher, data_root, ...)."""
    from rs_transfer.atomic import write_json_atomic
    from rs_transfer.results import read_results
    from rs_transfer.runner import run_experiment
    from rs_transfer.runner.distributed import launched_world_size
    from rs_transfer.studies.plan import expected_hash_or_none
    from rs_transfer.studies.reuse import reusable

    root, user, points = _points(task, backbone, work_dir=work_dir, preset=preset, seed=seed,
                                 cfg_options=cfg_options, holdout=holdout, grid=grid, kwargs=kwargs)
    world = launched_world_size(kwargs.get("launcher", "none"))   # the identity the points' runs record
    cells = []
    for lr, wd, point in points:
        cell_dir = point["work_dir"]
        res = read_results(cell_dir)
        if not reusable(res, expected_hash_or_none(task, backbone, world_size=world, **point), str(cell_dir)):
            res = run_experiment(task, backbone, **point)
        cells.append({"lr": lr, "weight_decay": wd, "holdout_" + res["metric"]: res["value"],
                      "work_dir": str(cell_dir)})
    key = next(k for k in cells[0] if k.startswith("holdout_"))
    best = max(cells, key=lambda c: c[key])   # max returns the first of equal maxima: grid order breaks ties
    final = run_experiment(task, backbone, preset=preset, seed=seed, work_dir=root,
                           cfg_options=_final_options(user, best["lr"], best["weight_decay"]), **kwargs)
    final["sweep"] = {"holdout_fraction": holdout, "holdout_seed": seed, "selected_on": key, "best": best,
                      "grid": cells, "protocol": "Kornblith et al. 2019: grid on a held-out split of the training "
                                                  "set, best point refit on all training images, test scored once"}
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        write_json_atomic(root / "results.json", final)
    return final


def plan_sweep(task: str, backbone: str, *, work_dir: str | Path | None = None, preset: str = "paper",
               seed: int = 0, cfg_options: dict[str, Any] | None = None, holdout: float = 0.2,
               grid: tuple[tuple[float, ...], tuple[float, ...]] | None = None, log: Any = print,
               **kwargs: Any) -> Path:
    """``--dry-run``: the sweep's points as a plan (``ROOT/plan.json``, read by ``study status ROOT``), each with its
    identity and state (done / stale / partial / to run) from its own folder, and the final run once every point is
    done (its learning rate and weight decay are the best point's: unknown before). Runs nothing."""
    from rs_transfer.results import read_results
    from rs_transfer.runner.distributed import launched_world_size
    from rs_transfer.studies.cells import PLAN_NAME, write_plan
    from rs_transfer.studies.planning import measured_throughput, plan_cell, plan_table

    root, user, points = _points(task, backbone, work_dir=work_dir, preset=preset, seed=seed,
                                 cfg_options=cfg_options, holdout=holdout, grid=grid, kwargs=kwargs)
    world = launched_world_size(kwargs.pop("launcher", "none"))
    kwargs.pop("tracking", None)
    measured = measured_throughput(root)
    planned = [plan_cell(root, f"sweep/{p['work_dir'].name}", task, backbone, p["work_dir"], world,
                         {k: v for k, v in p.items() if k not in ("work_dir", "launcher", "tracking")}, measured)
               for _, _, p in points]
    if all(c.state == "done" for c in planned):
        scores = [(read_results(p["work_dir"]) or {}).get("value") for _, _, p in points]
        lr, wd, _ = points[max(range(len(points)), key=lambda i: scores[i])]   # the first of equal maxima
        planned.append(plan_cell(root, "final", task, backbone, root, world, dict(
            preset=preset, seed=seed, cfg_options=_final_options(user, lr, wd), **kwargs), measured))
    write_plan(root, "sweep", planned, executor="local", backbone=backbone, preset=preset, task=task)
    log(plan_table(planned))
    if len(planned) == len(points):
        log(f"final run (best point on all training images, then the test set): planned once the "
            f"{sum(c.state != 'done' for c in planned)} point(s) not done are")
    log(f"plan: {root / PLAN_NAME}")
    return root / PLAN_NAME


# ---- CLI (`rs-transfer study sweep`; `rs-transfer run --sweep` is the same) ----------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="cifar100", choices=SWEEP_TASKS, help="task to sweep (default cifar100)")
    p.add_argument("--backbone", required=True, help="registered model, e.g. resnetrs50")
    p.add_argument("--weights", default=None, help="weight source (named or a file; default: random init)")
    p.add_argument("--preset", default="paper", choices=["paper", "mini"],
                   help="paper: the 7 x 7 grid; mini: the 2 x 2 corners on the mini dataset (a smoke test)")
    p.add_argument("--work-dir", default=None, help="the final run's folder; grid points go to WORK_DIR/sweep/")
    p.add_argument("--seed", type=int, default=0, help="seed of every run and of the held-out split (default 0)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="config edits, every run")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (every grid point: state, identity; the final run once the points are "
                        "done) and write it as WORK_DIR/plan.json; runs nothing")
    add_tracking(p)


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options
    from rs_transfer.runner.tracking import for_study

    if args.dry_run:
        plan_sweep(args.task, args.backbone, weights=args.weights, preset=args.preset, work_dir=args.work_dir,
                   seed=args.seed, cfg_options=parse_cfg_options(args.cfg_options))
        return 0
    tracking = for_study(args.tracking, "sweep", args.work_dir or "work_dirs")
    res = run_sweep(args.task, args.backbone, weights=args.weights, preset=args.preset, work_dir=args.work_dir,
                    seed=args.seed, cfg_options=parse_cfg_options(args.cfg_options),
                    **({"tracking": tracking} if tracking else {}))
    best = res["sweep"]["best"]
    print(f"best lr {best['lr']:g}, weight decay {best['weight_decay']:g}; test {res['metric']} = "
          f"{res['value']:.2f}\nresults: {res['work_dir']}/results.json")
    return 0
