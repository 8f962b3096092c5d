"""Experiment tracking beside TensorBoard: ``--tracking mlflow[=URI]`` or ``--tracking wandb`` on ``run`` and on
every study, through mmengine's own visualisation backends (``MLflowVisBackend`` / ``WandbVisBackend``).

- TensorBoard (and mmengine's local JSON logs) stay the default and stay on; tracking ADDS a backend.
- MLflow: the default URI is a local folder (``$RS_TRANSFER_HOME/mlruns``), so it works offline (reports skip the
  ``results.json`` copies an ``mlruns`` folder holds, should one be put inside a study folder);
  ``mlflow=http://host:5000`` or any MLflow URI is a user's server. One experiment per study (named by the study
  and its folder), one MLflow run per cell; tags name the cell (study, task, backbone, weights,
  protocol, seed, preset, config hash, code commit, world size, device), params are the recipe toggles and the
  protocol numbers; mmengine logs the curves while the run trains; :func:`finish` adds the headline metric, the
  final metrics and results.json as an artifact once results.json exists (mmengine closes its run before that).
- W&B is opt-in and never goes online unasked: it needs ``wandb login`` (an API key) or ``WANDB_MODE`` set (e.g.
  ``offline``); the project is ``WANDB_PROJECT`` or ``rs-transfer``.

Tracking is not part of a run's identity: ``visualizer`` is a volatile key of :mod:`rs_transfer.studies.reuse`,
so the same cell with and without ``--tracking`` has the same config hash and finished rows stay reusable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError

KINDS = ("mlflow", "wandb")
INSTALL = {"mlflow": "pip install 'rs-transfer[mlflow]' (or: pip install mlflow-skinny)",
           "wandb": "pip install wandb"}


@dataclass(frozen=True)
class Tracking:
    """Where a run is tracked: ``kind`` (mlflow, wandb), ``uri`` (MLflow tracking URI), ``experiment`` (MLflow
    experiment / W&B group: one per study) and ``tags`` every run of the study carries (``study``)."""

    kind: str
    uri: str | None = None
    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def for_study(self, study: str, folder: str | Path) -> Tracking:
        """The study's own experiment (``table4: t4`` for the folder ``studies/t4``), in the default store
        (``$RS_TRANSFER_HOME/mlruns``) unless ``mlflow=URI`` named one."""
        return replace(self, experiment=self.experiment or f"{study}: {Path(folder).resolve().name}",
                       tags={**self.tags, "study": study})


def parse(text: str | None) -> Tracking | None:
    """``--tracking`` value -> :class:`Tracking` (None: TensorBoard only). Checks the package is installed."""
    if text is None or text in ("", "tensorboard", "none"):
        return None
    kind, _, uri = text.partition("=")
    if kind not in KINDS:
        raise UserError(f"--tracking {text!r}: choose mlflow, mlflow=URI or wandb (TensorBoard is always on)")
    if kind == "wandb" and uri:
        raise UserError("--tracking wandb takes no URI (set WANDB_PROJECT / WANDB_MODE in the environment)")
    require(kind)
    if kind == "mlflow" and uri and "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
        uri = Path(uri).expanduser().resolve().as_uri()   # a plain folder
    return Tracking(kind, uri or None)


def require(kind: str) -> None:
    """One line saying how to install the tracking package when it is missing."""
    import importlib.util

    if importlib.util.find_spec(kind) is None:
        raise UserError(f"--tracking {kind} needs the {kind} package, which is not installed: {INSTALL[kind]}")
    if kind == "wandb" and not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY") \
            and not (Path.home() / ".netrc").is_file():
        raise UserError("--tracking wandb would log online but no W&B login was found: run `wandb login`, or set "
                        "WANDB_MODE=offline to keep the logs on this machine")


def allow_folder_store(uri: str) -> str:
    """A local folder store (``file://``) is what works offline with the light ``mlflow-skinny``; recent MLflow
    (3.18, the pinned one) calls it "maintenance mode" and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` opts in,
    so a folder URI opts in (a user who wants the database store passes ``mlflow=sqlite:///PATH/mlflow.db`` with the full mlflow)."""
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def default_uri() -> str:
    from rs_transfer.paths import rs_home

    return (rs_home() / "mlruns").resolve().as_uri()


def _flat(prefix: str, obj: Any) -> dict[str, str]:
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(obj)[:500]}


def _name(v: Any) -> str:
    """A class as its name (``SGD``, not ``<class 'torch.optim.sgd.SGD'>``), anything else as text."""
    return str(getattr(v, "__name__", v))


def params(cfg: Any, facts: dict[str, Any]) -> dict[str, str]:
    """The recipe toggles (``recipe.*``) and the protocol numbers (batch, LR, length, optimizer)."""
    out = _flat("recipe", dict(cfg.get("recipe") or {})) if cfg.get("recipe") else {}
    for key in ("global_batch_size", "per_process_batch_size", "accumulation", "reference_batch_size", "lr_scale",
                "amp", "ema_momentum", "compile"):
        if facts.get(key) is not None:
            out[key] = str(facts[key])
    train = dict(cfg.get("train_cfg") or {})
    out.update({f"train_cfg.{k}": _name(v) for k, v in train.items() if k in ("max_iters", "max_epochs",
                                                                             "val_interval", "type")})
    opt = dict((cfg.get("optim_wrapper") or {}).get("optimizer") or {})
    out.update({f"optimizer.{k}": _name(v) for k, v in opt.items() if k in ("type", "lr", "weight_decay",
                                                                          "momentum", "nesterov")})
    return out


def tags(prep: Any, tracking: Tracking, device: str) -> dict[str, str]:
    """The cell's tags (see the module docstring)."""
    from rs_transfer.results import git_revision

    ctx, w = prep.ctx, prep.weights
    return {**tracking.tags, "task": ctx.task, "backbone": ctx.backbone, "weights": str(w.get("source") or "none"),
            "protocol": ctx.protocol, "seed": str(ctx.seed), "preset": ctx.preset, "config_hash": prep.config_hash,
            "code_commit": str(git_revision().get("commit")), "world_size": str(ctx.world_size), "device": device,
            "rs_transfer.run_key": str(prep.cfg.experiment_name), "rs_transfer.kind": "cell"}


def attach(prep: Any, tracking: Tracking | None, device: str) -> None:
    """Add the tracking backend to the run's visualizer (TensorBoard stays). The config hash is unchanged."""
    if tracking is None or "visualizer" not in prep.cfg:
        return
    cfg = prep.cfg
    run_tags = tags(prep, tracking, device)
    name = f"{prep.ctx.task}/{prep.work_dir.name}"   # the cell's folder: tells the cells of a study apart
    if tracking.kind == "mlflow":
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        uri = allow_folder_store(tracking.uri or default_uri())
        # A folder store is given as mmengine's save_dir (it builds the file:// URI itself); a URI only for a server,
        # else mmengine warns "make sure that the mlflow server is running" for a plain folder.
        folder = url2pathname(urlparse(uri).path) if uri.startswith("file:") else None
        backend = dict(type="MLflowVisBackend", save_dir=folder or str(prep.work_dir / "mlflow"),
                       exp_name=tracking.experiment or "rs-transfer run", run_name=name, tags=run_tags,
                       params=params(cfg, prep.facts), tracking_uri=None if folder else uri, tracked_config_keys=[])
    else:
        backend = dict(type="WandbVisBackend", save_dir=str(prep.work_dir / "wandb"), init_kwargs=dict(
            project=os.environ.get("WANDB_PROJECT", "rs-transfer"), group=tracking.experiment, name=name,
            tags=[f"{k}:{v}" for k, v in run_tags.items() if k in ("study", "task", "preset")],
            config={**run_tags, **params(cfg, prep.facts)}))
    vis = dict(cfg.visualizer)
    vis["vis_backends"] = list(vis.get("vis_backends") or []) + [backend]
    cfg.visualizer = vis


def finish(tracking: Tracking | None, results: dict[str, Any], results_path: Path) -> None:
    """After results.json is written: the headline and final metrics, and results.json as an artifact, into the
    cell's MLflow run (created here for protocols that train nothing: linear, kNN)."""
    if tracking is None or tracking.kind != "mlflow":
        return
    client, exp_id = _experiment(tracking)
    key = str((results.get("config") or {}).get("experiment_name"))
    found = client.search_runs([exp_id], filter_string=f"tags.`rs_transfer.run_key` = '{key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:   # no mmengine runner (linear / kNN protocols): the run is made here
        run_tags = {**tracking.tags, "rs_transfer.kind": "cell", "task": results["task"],
                    "backbone": results["backbone"], "rs_transfer.run_key": key,
                    "weights": str((results.get("weights") or {}).get("source") or "none"),
                    "protocol": results.get("protocol", ""), "seed": str(results.get("seed")),
                    "preset": results.get("preset", ""), "config_hash": results.get("config_hash", ""),
                    "code_commit": str((results.get("git") or {}).get("commit")),
                    "world_size": str(results.get("world_size")), "device": str(results.get("device"))}
        run_id = client.create_run(exp_id, tags=run_tags, run_name=f"{results['task']}/{results_path.parent.name}"
                                   ).info.run_id
    client.log_metric(run_id, f"final/{results['metric']}", float(results["value"]))
    for k, v in (results.get("metrics") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            client.log_metric(run_id, f"final/{k}", float(v))
    for k in ("train_time_s", "eval_time_s", "wall_time_s"):
        if isinstance(results.get(k), (int, float)):
            client.log_metric(run_id, k, float(results[k]))
    client.log_artifact(run_id, str(results_path))
    client.set_terminated(run_id)


def _experiment(tracking: Tracking) -> tuple[Any, str]:
    """MLflow's client at the tracking URI and the id of the tracking's experiment (created when new)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=allow_folder_store(tracking.uri or default_uri()))
    name = tracking.experiment or "rs-transfer run"
    exp = client.get_experiment_by_name(name)
    return client, exp.experiment_id if exp else client.create_experiment(name)


def log_report(tracking: Tracking | None, files: list[Path]) -> None:
    """A study's report files as the artifacts of one run named ``report`` in the study's experiment."""
    if tracking is None or tracking.kind != "mlflow":
        return
    client, exp_id = _experiment(tracking)
    run = client.create_run(exp_id, run_name="report", tags={**tracking.tags, "rs_transfer.kind": "report"})
    for f in files:
        if Path(f).is_file():
            client.log_artifact(run.info.run_id, str(f))
    client.set_terminated(run.info.run_id)


def add_argument(parser: Any) -> None:
    """``--tracking`` for ``run`` and every study (light: nothing imported)."""
    parser.add_argument("--tracking", default=None, metavar="mlflow[=URI]|wandb",
                        help="also log every run to MLflow (default URI: the local folder $RS_TRANSFER_HOME/mlruns; "
                             "=URI for another folder or a tracking server; one experiment per study; "
                             "needs the mlflow extra) or to Weights & Biases (needs `wandb login` or "
                             "WANDB_MODE=offline). TensorBoard is always on; tracking never changes the config hash")


def for_study(text: str | None, study: str, folder: str | Path) -> Tracking | None:
    """``--tracking`` of a study -> its :class:`Tracking` (one experiment per study), or None."""
    tracking = parse(text)
    return tracking.for_study(study, folder) if tracking else None
