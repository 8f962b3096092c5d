"""``rs-transfer run --task cifar100 --sweep`` (also the transfer suite's single-label tasks): the fine-tuning
hyper-parameter selection of Kornblith, Shlens & Le 2019 (as SimCLR appendix B.8 also uses it) instead of the
config's single LR / weight-decay point.

Grid (SimCLR B.8.1's words for Kornblith et al.'s): 7 learning rates log-spaced over 1e-4..0.1 x 7 weight decays
log-spaced over 1e-6..1e-3 "as well as no weight decay" (``LR_GRID``, ``WD_GRID``: 7 x 8 = 56 points; ``--preset
mini``: the 2 x 2 corners ``MINI_GRID`` of a smaller range, a smoke test). "We divide these values of weight decay by
the learning rate": a grid value v is the optimizer's ``weight_decay = v / lr`` (:func:`optimizer_weight_decay`), so
the decay per step, lr x weight_decay, is v at the start of the schedule whatever the LR. Each point
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rs_transfer.errors import UserError
from rs_transfer.runner.tracking import add_argument as add_tracking

if TYPE_CHECKING:
    from rs_transfer.studies.cells import PlannedCell
    from rs_transfer.studies.executor import SlurmOptions

# CIFAR-100 and the transfer suite's single-label datasets (their TvClassDataset takes the same subset keys; VOC2007's
# multi-label fine-tune is left out: not tried through the sweep).
SWEEP_TASKS = ("cifar100", "food101", "cifar10", "sun397", "stanford-cars", "fgvc-aircraft", "dtd", "oxford-pets",
               "caltech101", "flowers102")
LR_GRID = tuple(round(10 ** (-4 + 3 * i / 6), 10) for i in range(7))   # 1e-4, 3.16e-4, ..., 0.1
WD_GRID = (0.0, *(round(10 ** (-6 + 3 * i / 6), 12) for i in range(7)))   # none, 1e-6, 3.16e-6, ..., 1e-3
MINI_GRID = ((1e-3, 1e-2), (1e-6, 1e-4))


def optimizer_weight_decay(lr: float, value: float) -> float:
    """The optimizer's ``weight_decay`` for grid value ``value`` at learning rate ``lr``: ``value / lr`` (Kornblith
    et al. divide the weight decay by the learning rate); 0 stays 0."""
    return value / lr if value else 0.0


def _cell_options(lr: float, wd: float, holdout: float, seed: int) -> dict[str, Any]:
    return {"optim_wrapper.optimizer.lr": lr, "optim_wrapper.optimizer.weight_decay": optimizer_weight_decay(lr, wd),
            "train_dataloader.dataset.subset": "fit", "train_dataloader.dataset.holdout": holdout,
            "train_dataloader.dataset.holdout_seed": seed,
            "val_dataloader.dataset.split": "train", "val_dataloader.dataset.subset": "holdout",
            "val_dataloader.dataset.holdout": holdout, "val_dataloader.dataset.holdout_seed": seed}


Grid = tuple[tuple[float, ...], tuple[float, ...]]
Point = tuple[float, float, dict[str, Any]]


def sweep_root(task: str, backbone: str, work_dir: str | Path | None, preset: str, seed: int) -> Path:
    """The sweep's folder (the final run's; points under ``sweep/``, ``plan.json``, the default SLURM folder)."""
    return Path(work_dir or Path("work_dirs") / f"{task}-{backbone}-sweep-{preset}-seed{seed}").resolve()


def _points(task: str, backbone: str, *, work_dir: str | Path | None, preset: str, seed: int,
            cfg_options: dict[str, Any] | None, holdout: float, grid: Grid | None, kwargs: dict[str, Any]
            ) -> tuple[Path, dict[str, Any], list[Point]]:
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
    clash = sorted(k for k in user if k in _cell_options(1, 0, 0, 0))
    if clash:
        raise UserError(f"--sweep sets {', '.join(clash)} itself; drop them from --cfg-options")
    root = sweep_root(task, backbone, work_dir, preset, seed)
    return root, user, [(lr, wd, dict(preset=preset, seed=seed, work_dir=root / "sweep" / f"lr{lr:g}_wd{wd:g}",
                                      cfg_options={**user, **_cell_options(lr, wd, holdout, seed)}, **kwargs))
                        for lr in lrs for wd in wds]


def _final_options(user: dict[str, Any], lr: float, wd: float) -> dict[str, Any]:
    return {**user, "optim_wrapper.optimizer.lr": lr,
            "optim_wrapper.optimizer.weight_decay": optimizer_weight_decay(lr, wd)}


def _best(scores: list[float]) -> int:
    """Index of the best point: the first of equal maxima, so grid order (smaller LR and weight decay first) breaks
    ties. The sweep and its plan both choose with this."""
    return max(range(len(scores)), key=lambda i: scores[i])


def run_sweep(task: str, backbone: str, *, work_dir: str | Path | None = None, preset: str = "paper",
              seed: int = 0, cfg_options: dict[str, Any] | None = None, holdout: float = 0.2,
              grid: Grid | None = None, world: int | None = None,
              runner: Callable[..., dict[str, Any]] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Grid on the held-out split, then the best point on train -> test. ``kwargs`` go to every
    :func:`rs_transfer.runner.run_experiment` call (weights, model_overrides, launcher, data_root, ...).
    ``world``: the processes the runs had (default: what ``launcher`` gives here; SLURM cells: their own tasks, as
    they record it); ``runner``: what runs a point or the final run that cannot be reused (default run_experiment;
    :func:`submit_sweep` passes one that refuses, as everything must be done by then)."""
    from rs_transfer.atomic import write_json_atomic
    from rs_transfer.results import read_results
    from rs_transfer.runner.distributed import launched_world_size
    from rs_transfer.studies.plan import expected_hash_or_none
    from rs_transfer.studies.reuse import reusable

    if runner is None:
        from rs_transfer.runner import run_experiment as runner
    root, user, points = _points(task, backbone, work_dir=work_dir, preset=preset, seed=seed,
                                 cfg_options=cfg_options, holdout=holdout, grid=grid, kwargs=kwargs)
    if world is None:
        world = launched_world_size(kwargs.get("launcher", "none"))   # the identity the runs record

    def reuse_or_run(run_kwargs: dict[str, Any]) -> dict[str, Any]:
        wd = run_kwargs["work_dir"]
        res = read_results(wd)
        if reusable(res, expected_hash_or_none(task, backbone, world_size=world, **run_kwargs), str(wd)):
            return res  # type: ignore[return-value]
        return runner(task, backbone, **run_kwargs)

    cells = []
    for lr, wd, point in points:
        res = reuse_or_run(point)
        cells.append({"lr": lr, "weight_decay": wd, "optimizer_weight_decay": optimizer_weight_decay(lr, wd),
                      "holdout_" + res["metric"]: res["value"], "work_dir": str(point["work_dir"])})
    key = next(k for k in cells[0] if k.startswith("holdout_"))
    best = cells[_best([c[key] for c in cells])]
    final = reuse_or_run(dict(preset=preset, seed=seed, work_dir=root,
                              cfg_options=_final_options(user, best["lr"], best["weight_decay"]), **kwargs))
    final["sweep"] = {"holdout_fraction": holdout, "holdout_seed": seed, "selected_on": key, "best": best,
                      "grid": cells, "protocol": "Kornblith et al. 2019: grid on a held-out split of the training "
                                                  "set, best point refit on all training images, test scored once; "
                                                  "weight_decay: the grid's value, the optimizer's is value / lr"}
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        write_json_atomic(root / "results.json", final)
    return final


def _plan(task: str, backbone: str, *, work_dir: str | Path | None, preset: str, seed: int,
          cfg_options: dict[str, Any] | None, holdout: float, grid: Grid | None, world: int,
          gpu: tuple[str, float] | None, kwargs: dict[str, Any]) -> tuple[Path, list[PlannedCell], int]:
    """``(root, planned cells, number of points)``: every point with its identity (``world`` processes) and state,
    then the final run once every point is done (its LR and weight decay are the best point's: unknown before)."""
    from rs_transfer.results import read_results
    from rs_transfer.studies.planning import measured_throughput, plan_cell

    kwargs = {k: v for k, v in kwargs.items() if k not in ("launcher", "tracking")}
    root, user, points = _points(task, backbone, work_dir=work_dir, preset=preset, seed=seed,
                                 cfg_options=cfg_options, holdout=holdout, grid=grid, kwargs=kwargs)
    measured = measured_throughput(root)
    flops = gpu is not None   # counting FLOPs builds a model per point: only when an estimate needs them
    planned = [plan_cell(root, f"sweep/{p['work_dir'].name}", task, backbone, p["work_dir"], world,
                         {k: v for k, v in p.items() if k != "work_dir"}, measured, flops=flops, gpu=gpu)
               for _, _, p in points]
    if all(c.state == "done" for c in planned):
        lr, wd, _ = points[_best([(read_results(p["work_dir"]) or {})["value"] for _, _, p in points])]
        planned.append(plan_cell(root, "final", task, backbone, root, world, dict(
            preset=preset, seed=seed, cfg_options=_final_options(user, lr, wd), **kwargs), measured,
            flops=flops, gpu=gpu))
    return root, planned, len(points)


def plan_sweep(task: str, backbone: str, *, work_dir: str | Path | None = None, preset: str = "paper",
               seed: int = 0, cfg_options: dict[str, Any] | None = None, holdout: float = 0.2,
               grid: Grid | None = None, log: Any = print, slurm_opts: SlurmOptions | None = None,
               gpu: tuple[str, float] | None = None, **kwargs: Any) -> Path:
    """``--dry-run``: the sweep's points as a plan (``ROOT/plan.json``, read by ``study status ROOT``), each with its
    identity and state (done / stale / partial / to run) from its own folder, and the final run once every point is
    done. ``slurm_opts``: plan the cells as SLURM cells (their world size is the job's tasks). Runs nothing."""
    from dataclasses import asdict

    from rs_transfer.studies.cells import PLAN_NAME, write_plan
    from rs_transfer.studies.planning import cell_world, plan_table

    executor = "slurm" if slurm_opts else "local"
    world = cell_world(executor, slurm_opts, kwargs.get("launcher", "none"))
    root, planned, n_points = _plan(task, backbone, work_dir=work_dir, preset=preset, seed=seed,
                                    cfg_options=cfg_options, holdout=holdout, grid=grid, world=world, gpu=gpu,
                                    kwargs=kwargs)
    write_plan(root, "sweep", planned, executor=executor, backbone=backbone, preset=preset, task=task,
               slurm=asdict(slurm_opts) if slurm_opts else None)
    log(plan_table(planned))
    if len(planned) == n_points:
        log(f"final run (best point on all training images, then the test set): planned once the "
            f"{sum(c.state != 'done' for c in planned)} point(s) not done are")
    log(f"plan: {root / PLAN_NAME}")
    return root / PLAN_NAME


def submit_sweep(task: str, backbone: str, *, slurm_opts: SlurmOptions, work_dir: str | Path | None = None,
                 preset: str = "paper", seed: int = 0, cfg_options: dict[str, Any] | None = None,
                 holdout: float = 0.2, grid: Grid | None = None, gpu: tuple[str, float] | None = None,
                 log: Callable[[str], Any] = print, **kwargs: Any) -> dict[str, Any] | None:
    """``--executor slurm``, one stage per call: submit the points not done (one array); once they are, the final run
    (a one-cell array); once it is, write the sweep's result with :func:`run_sweep` (returned), which reuses every run
    by the identity planned here. None while something is still to run; cells queued or running are not submitted
    again."""
    from dataclasses import asdict

    from rs_transfer.studies.cells import write_plan
    from rs_transfer.studies.planning import cell_world, submit_plan

    world = cell_world("slurm", slurm_opts, "none")
    root, planned, n_points = _plan(task, backbone, work_dir=work_dir, preset=preset, seed=seed,
                                    cfg_options=cfg_options, holdout=holdout, grid=grid, world=world, gpu=gpu,
                                    kwargs=kwargs)
    write_plan(root, "sweep", planned, executor="slurm", backbone=backbone, preset=preset, task=task,
               slurm=asdict(slurm_opts))
    todo = [c for c in planned if c.state != "done"]
    if not todo:
        def refuse(*args: Any, **kw: Any) -> dict[str, Any]:
            raise UserError(f"{kw.get('work_dir')} was planned as done but its run does not match: run this "
                            "command again (it plans and submits it)")

        return run_sweep(task, backbone, work_dir=work_dir, preset=preset, seed=seed, cfg_options=cfg_options,
                         holdout=holdout, grid=grid, world=world, runner=refuse, **kwargs)
    final = len(planned) > n_points
    pending = submit_plan(root, todo, slurm_opts, name="sweep-final" if final else "sweep", log=log)
    what = "the final run (best point on all training images, then the test set)" if final else \
        f"{len(todo)} grid point(s)"
    then = "write the sweep's results.json" if final else "submit the final run (the best point's LR / weight decay)"
    if pending < len(todo):
        log(f"{len(todo) - pending} cell(s) could not be submitted (above): fix them, or run the sweep here "
            "without --executor slurm")
    log(f"{what} not done yet: `rs-transfer study status {root}` shows {'it' if final else 'them'}; run this "
        f"command again when {'it finishes' if final else 'they finish'} to {then}")
    return None
# ---- CLI (`rs-transfer study sweep`; `rs-transfer run --sweep` is the same) ----------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    from rs_transfer.studies.executor import add_executor_arguments

    p.add_argument("--task", default="cifar100", choices=SWEEP_TASKS, help="task to sweep (default cifar100)")
    p.add_argument("--backbone", required=True, help="registered model, e.g. resnetrs50")
    p.add_argument("--weights", default=None, help="weight source (named or a file; default: random init)")
    p.add_argument("--preset", default="paper", choices=["paper", "mini"],
                   help="paper: the 7 LR x 8 weight-decay grid; mini: the 2 x 2 corners on the mini dataset (a smoke test)")
    p.add_argument("--work-dir", default=None,
                   help="the final run's folder; grid points go to WORK_DIR/sweep/, the plan to WORK_DIR/plan.json "
                        "and, with --executor slurm, job scripts and logs to WORK_DIR/slurm")
    p.add_argument("--seed", type=int, default=0, help="seed of every run and of the held-out split (default 0)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="config edits, every run")
    add_tracking(p)
    add_executor_arguments(p)   # --dry-run; --executor slurm: the points as one array, then the final run


def run(args: argparse.Namespace) -> int:
    from rs_transfer.runner import parse_cfg_options
    from rs_transfer.runner.tracking import for_study
    from rs_transfer.studies.executor import slurm_options

    common = dict(weights=args.weights, preset=args.preset, work_dir=args.work_dir, seed=args.seed,
                  cfg_options=parse_cfg_options(args.cfg_options))
    root = sweep_root(args.task, args.backbone, args.work_dir, args.preset, args.seed)
    opts = slurm_options(args, root) if args.executor == "slurm" else None
    gpu = (args.gpu, args.assume_mfu) if args.gpu else None
    if args.dry_run:
        plan_sweep(args.task, args.backbone, slurm_opts=opts, gpu=gpu, **common)
        return 0
    if opts is not None:
        res = submit_sweep(args.task, args.backbone, slurm_opts=opts, gpu=gpu, **common)
        if res is None:
            return 0
    else:
        tracking = for_study(args.tracking, "sweep", args.work_dir or "work_dirs")
        res = run_sweep(args.task, args.backbone, **common, **({"tracking": tracking} if tracking else {}))
    best = res["sweep"]["best"]
    print(f"best lr {best['lr']:g}, weight decay {best['weight_decay']:g}; test {res['metric']} = "
          f"{res['value']:.2f}\nresults: {res['work_dir']}/results.json")
    return 0
