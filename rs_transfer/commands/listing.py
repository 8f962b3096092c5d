"""``rs-transfer list {models,weights,tasks}``."""
from __future__ import annotations

import argparse

HELP = "list registered models, named weight sources or tasks"
DESCRIPTION = """List what can be named on the command line.

  models   registered backbones (family, default resolution, block counts)
  weights  named weight sources: fitting model (and options), input normalisation, published checksum,
           whether cached locally, publisher and where published
  tasks    downstream tasks and their headline metric
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["models", "weights", "tasks"], help="what to list")
    p.add_argument("--family", help="models only: resnet, resnetrs, resnet3d or resnetrs3d")


def run(args: argparse.Namespace) -> int:
    if args.what == "models":
        from rs_transfer.backbones import BLOCKS_PER_DEPTH, get_spec, list_models

        print(f"{'name':<16} {'family':<11} {'res':>4}  blocks / notes")
        for name in list_models(args.family):
            s = get_spec(name)
            blocks = s.kwargs.get("layers") or BLOCKS_PER_DEPTH.get(s.kwargs.get("depth", 0), "")
            print(f"{name:<16} {s.family:<11} {s.resolution:>4}  {blocks} {s.description}")
    elif args.what == "weights":
        from rs_transfer.weights.sources import SOURCES, weights_home

        home = weights_home()
        print(f"cache: {home}   (nothing is downloaded implicitly: `rs-transfer weights download NAME`)")
        print(f"{'name':<25} {'model':<12} {'norm':<10} {'checksum':<19} {'cached':<6} publisher: download URL")
        for s in SOURCES.values():
            cached = "yes" if (home / s.filename).is_file() else "no"
            where = s.url or f"no download, convert it (`rs-transfer weights where {s.name}`)"
            checksum = s.checksum.replace("unknown (local conversion)", "-").replace("unknown (size only)",
                                                                                   "unknown (size)")
            print(f"{s.name:<25} {s.arch:<12} {s.normalization.name:<10} {checksum:<19} {cached:<6} "
                  f"{s.publisher}: {where}")
            if s.model_options:
                print(f"{'':<25} model: {s.model_hint()}")
    else:
        from rs_transfer.tasks import list_tasks

        for name in list_tasks():
            try:
                meta = task_metadata(name)
                print(f"{name:<12} {meta['metric']:<8} {meta['title']}")
            except Exception as err:  # a task whose module is not available yet
                print(f"{name:<12} {'-':<8} not available ({err})")
    return 0


def task_metadata(name: str) -> dict[str, object]:
    """``title`` and ``metric`` of a task, read from the literal ``TASK = Task(...)`` (or, for the transfer suite's
    modules, ``SUITE = Suite(...)``, from which ``TASK`` is made) in its module's source when it is written that
    way: importing the module costs torch and mmengine (seconds), and listing must not. Anything the source does not
    spell as a literal comes from importing the task (the same values: tests compare both)."""
    import ast
    import importlib.util

    from rs_transfer.tasks import TASK_MODULES, get_task

    keys = ("title", "metric")
    found: dict[str, object] = {}
    try:
        spec = importlib.util.find_spec(TASK_MODULES[name])
        source = spec.loader.get_source(spec.name) if spec and spec.loader else None  # type: ignore[union-attr]
        for node in ast.parse(source or "").body:
            targets = [getattr(t, "id", None) for t in node.targets] if isinstance(node, ast.Assign) else []
            if targets in (["TASK"], ["SUITE"]) and isinstance(node.value, ast.Call):  # type: ignore[union-attr]
                for kw in node.value.keywords:
                    if kw.arg in (*keys, "name") and isinstance(kw.value, ast.Constant):
                        found[kw.arg] = kw.value.value
    except (ImportError, SyntaxError, KeyError, ValueError):
        found = {}
    if all(k in found for k in keys) and found.get("name") == name:
        return {k: found[k] for k in keys}
    task = get_task(name)
    return {k: getattr(task, k) for k in keys}
