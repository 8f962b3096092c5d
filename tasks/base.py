"""The task contract: what a downstream task must provide so that ONE runner can run it.

A task module (``rs_transfer.tasks.<name>`` or ``rs_transfer.video.task``) exposes ``TASK: Task``. The runner
(:func:`rs_transfer.runner.run_experiment`) does everything generic and calls the task only where the task knows
better:

1. ``--data-root``, else ``Task.default_data_root()``, or for ``--preset mini`` ``Task.make_mini`` -> a data folder
   in the task's REAL on-disk format (mini: tiny, deterministic, written once under
   ``$RS_TRANSFER_HOME/data/mini/<task name>``);
2. ``Task.check_data(root).raise_if_bad()`` -> a one-line error naming the expected layout and where to get the data;
3. the mmengine config ``configs/<Task.config_for(protocol)>`` is loaded (pure-Python "new style" config whose
   ``model.backbone`` is ``dict(type=ResNetRS, ...)`` listing only TASK-level keys such as ``out_indices``,
   ``frozen_stages``, ``norm_eval`` or ``num_classes``; never architecture keys such as depth);
4. the runner merges the backbone kwargs into ``cfg.model.backbone`` (registry kwargs of the chosen backbone < the
   config's keys < ``model_overrides``; then ``weights=<source>``, which ``ResNetRS.init_weights`` loads through
   :func:`rs_transfer.load_weights`) and sets ``cfg.model.data_preprocessor.mean/std`` (when that dict exists) from
   the weight source's normalisation; ``--cfg-options`` are applied before and again after step 5;
5. ``Task.configure(cfg, ctx)`` does the task-specific wiring: ``ctx.data_root`` into the datasets, evaluator
   settings, and shrinking for ``ctx.preset == "mini"`` (resolution, its own GLOBAL batch ``cfg.global_batch_size``
   with the LR that goes with it, no workers, and ``rs_transfer.runner.set_iterations(cfg, n)`` which rescales
   ``param_scheduler`` incl. milestones and ``checkpoint_interval``); it may set the runner switches ``amp``,
   ``ema``, ``ema_momentum``, ``log_interval``, ``checkpoint_interval``, ``global_batch_size`` (top-level
   config keys, see ``rs_transfer/runner/experiment.py``) but should NOT build ``default_hooks``/``visualizer``/``env_cfg``;
   then the runner, generically (only when the config has ``train_cfg``): ``work_dir``, ``randomness.seed``,
   ``launcher``, ``env_cfg`` (gloo on CPU), default hooks (checkpoint, logger with ETA, param scheduler, sampler
   seed) unless the config defines them, TensorBoard visualizer, AMP/EMA from the switches, the per-process batch,
   gradient accumulation, LR and micro-iteration counts from ``global_batch_size`` (rs_transfer/runner/batch.py), and
   its own hooks (input-normalisation check before the first step, metrics/throughput capture, RNG state);
6. protocol ``"finetune"`` (and any protocol without a ``run_protocol`` hook) -> mmengine ``Runner``: train, then
   the metrics of the last validation (the ``val_evaluator`` must produce ``Task.metric``);
   other protocols (``linear``/``knn``/``fewshot``) -> ``Task.run_protocol(cfg, ctx) -> dict`` of metrics.

Metric values are reported as the evaluator returns them (percentages for accuracy/mIoU/AP, as in Table 4).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rs_transfer.errors import UserError

if TYPE_CHECKING:  # heavy imports only for type checkers: ``rs-transfer --help`` must stay fast
    from mmengine.config import Config

PROTOCOLS = ("finetune", "linear", "knn", "fewshot")
UNREADABLE = ": unreadable "          # marks a file-check message about a file that does not decode
PRESETS = ("paper", "mini")
MINI_MARKER = "RS_TRANSFER_MINI"      # left in the data root by every ``make_mini``: a generated set


def is_mini(root: Path) -> bool:
    """A generated ``--preset mini`` data set: its generator leaves ``MINI_MARKER`` in the data root (or in the folder
    above when the task's root is a sub-folder), and ``tasks/mini.ensure_mini`` its ``MINI.json`` (so a mini set
    cached before a generator wrote the marker counts too). Split sizes are then not compared with the standard
    ones."""
    root = Path(root)
    return any((d / name).is_file() for d in (root, root.parent) for name in (MINI_MARKER, "MINI.json"))


def home() -> Path:
    """``$RS_TRANSFER_HOME`` (default ``~/.cache/rs-transfer``): weights, data and mini datasets live under it."""
    from rs_transfer.paths import rs_home

    return rs_home()


@dataclass
class DataReport:
    """What ``check_data`` found: ``counts`` per split (e.g. ``{"train": 50000, "test": 10000}``), ``problems``,
    each naming exactly what is missing or malformed (a path, a key, a count), which ``preparation`` of the data it
    recognised (when a task accepts several), and ``warnings``: usable data that differs from the standard
    protocol (e.g. other split sizes), each saying what a run will use. Warnings never stop a run."""

    task: str
    root: Path
    layout: str                       # the task's expected layout (Task.data_layout)
    source: str                       # where to get the data (Task.data_source)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    preparation: str = ""
    warnings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)   # files that do not decode: runs skip and count them

    def add(self, problem: str | None) -> None:
        """Record a file check's outcome: an unreadable (corrupt) file is not a problem -- runs skip and count it
        (``tasks/_corrupt.py``) -- everything else (missing files, wrong formats, bad boxes) is."""
        if problem is None:
            return
        (self.unreadable if UNREADABLE in problem else self.problems).append(problem)

    def compare_sizes(self, standard: Mapping[str, int], *, name: str, noun: str = "images",
                      evaluated: Collection[str] = (), notes: Mapping[str, str] | None = None) -> None:
        """THE split-size rule of every task: a split whose count (``self.counts``) differs from the standard
        one is a warning, never a problem, saying what the run uses; usable data in another size (a subset, a
        re-download with fewer files, extra frames) is the user's choice, and the number is then labelled, not
        refused. ``evaluated`` splits add that their metrics are not comparable with published ones; ``notes``
        replace the default "the run uses ..." clause of a split. Generated mini sets (``is_mini``) are exempt."""
        if is_mini(self.root):
            return
        for split, n in standard.items():
            got = self.counts.get(split)
            if got is None or got == n:
                continue
            use = (notes or {}).get(split) or (
                f"the run {'evaluates' if split in evaluated else 'trains'} on these {got:,}"
                + ("; its metrics are not comparable with published ones" if split in evaluated else ""))
            self.warnings.append(f"{split}: {got:,} {noun}, the standard {name} split has {n:,}; {use}")

    def all_warnings(self) -> list[str]:
        """``warnings`` plus one summary line for the unreadable files."""
        out = list(self.warnings)
        if self.unreadable:
            shown = "; ".join(self.unreadable[:3]) + (" ..." if len(self.unreadable) > 3 else "")
            out.append(f"{len(self.unreadable)} unreadable file(s), which runs skip and count (too many in an "
                       f"evaluation split stop the evaluation): {shown}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_bad(self) -> "DataReport":
        """``UserError`` (one line) when there are problems; otherwise each warning is emitted (``warnings.warn``,
        shown once per run) and the report returned."""
        if not self.problems:
            import warnings

            for w in self.all_warnings():
                warnings.warn(f"{self.task} data at {self.root}: {w}", UserWarning, stacklevel=2)
        if self.problems:
            shown = "; ".join(self.problems[:5]) + (f" (and {len(self.problems) - 5} more)"
                                                    if len(self.problems) > 5 else "")
            raise UserError(f"{self.task} data at {self.root} is not usable: {shown}. Expected layout: "
                            f"{self.layout}. Get it from {self.source} (or use --preset mini for a tiny "
                            f"generated set; --data-root points elsewhere).")
        return self

    def details(self) -> str:
        """Lines ``rs-transfer data check`` prints under its OK line: the preparation found and the warnings."""
        lines = [f"preparation: {self.preparation}"] if self.preparation else []
        return "\n".join(lines + [f"WARNING: {w}" for w in self.all_warnings()])

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "root": str(self.root), "ok": self.ok, "counts": dict(self.counts),
                "problems": list(self.problems), "preparation": self.preparation, "warnings": list(self.warnings),
                "unreadable": list(self.unreadable)}


def single_class_warning(split: str, labels: "list[Any] | dict[Any, int]") -> str | None:
    """A warning when a classification split's labels (a list, or counts per class) hold a single class: training
    is then trivial and accuracy 100% or chance, typically a label column read wrongly or one folder copied."""
    present = [c for c, n in labels.items() if n] if isinstance(labels, dict) else sorted(set(labels))
    if len(present) != 1:
        return None
    return (f"{split}: a single class ({present[0]}): every image has the same label, so a classifier learns "
            "nothing from it; were the labels read from the right field, or only one class folder copied?")


@dataclass
class RunContext:
    """Everything about one run that a task may need in ``configure``/``run_protocol``.

    ``backbone_kwargs`` are the merged ResNetRS kwargs (registry < config < model_overrides), already written into
    ``cfg.model.backbone``. ``normalization`` is mean/std in 0-255 units of the weight source (ImageNet when no
    weights), already written into ``cfg.model.data_preprocessor`` when that exists.
    """

    task: str
    backbone: str
    backbone_kwargs: dict[str, Any]
    weights: str | None
    normalization: dict[str, Any]     # {"name": str, "mean": [3 floats], "std": [3 floats]}
    preset: str                       # "paper" | "mini"
    protocol: str
    data_root: Path
    work_dir: Path
    seed: int = 0
    launcher: str = "none"
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)   # free-form notes a task wants in results.json

    @property
    def mini(self) -> bool:
        return self.preset == "mini"


def _no_mini(root: Path) -> Path:
    raise UserError("this task has no mini dataset generator yet")


def _no_configure(cfg: "Config", ctx: RunContext) -> None:
    return None


@dataclass(frozen=True)
class Task:
    """One downstream task (a Table 4 / Table 5 column).

    name:      CLI name (``voc-seg``).            title:  report column (``Pascal seg``).
    metric:    headline key in ``results.json["metrics"]`` (``mIoU``); the evaluator must report it.
    config:    default config file name in ``configs/`` (``voc_seg.py``); ``protocol_configs`` overrides it per
               protocol (``{"linear": "cifar100_frozen.py"}``).
    data_dirname: default folder under ``$RS_TRANSFER_HOME/data`` when no ``--data-root`` is given.
    make_mini(root) -> data root: write a tiny deterministic dataset in the REAL format into ``root`` (an empty
               folder the runner owns; it is renamed into place only when complete, so this runs once).
    check_data(root) -> DataReport: layout + split counts, each problem naming what is missing/malformed.
    configure(cfg, ctx): task-specific config wiring (see module docstring, step 5).
    run_protocol(cfg, ctx) -> metrics dict: for protocols not trained by the mmengine Runner (linear, knn).
    data_files(root) -> paths: every image/mask/annotation file a run decodes, for ``rs-transfer data check
               --deep`` (which decodes each completely; ``check_data`` reads headers only). None: no deep check.
    check_values(path, pixels) -> problem or None: ``data check --deep`` passes every decoded image (Pillow's
               array: palette indices for palette PNGs) so that the task can name ground truth it cannot use
               (mask values outside the class range, depth maps without a measured pixel; ``tasks/_labels.py``).
    backbone_families: the registry families (``rs_transfer/backbones/registry.py``) the task's config can build:
               2D image tasks take ``resnet``/``resnetrs``, Kinetics the 3D ``resnet3d``/``resnetrs3d`` ones.
    """

    name: str
    title: str
    metric: str
    config: str
    data_layout: str
    data_source: str
    make_mini: Callable[[Path], Path] = _no_mini
    check_data: Callable[[Path], DataReport] | None = None
    configure: Callable[["Config", RunContext], None] = _no_configure
    higher_is_better: bool = True
    protocols: tuple[str, ...] = ("finetune",)
    protocol_configs: Mapping[str, str] = field(default_factory=dict)
    run_protocol: Callable[["Config", RunContext], dict[str, float]] | None = None
    data_dirname: str = ""
    description: str = ""
    data_files: Callable[[Path], list[Path]] | None = None
    check_values: Callable[[Path, Any], str | None] | None = None
    backbone_families: tuple[str, ...] = ("resnet", "resnetrs")

    def check_backbone(self, backbone: str) -> None:
        """One line naming the backbones this task takes when ``backbone`` is of another kind (a 2D name for the
        video task fails deep inside the model build otherwise, e.g. "unknown option 'inflate'"), with the
        counterpart of the other kind when it exists (``resnet50`` -> ``resnet3d50``)."""
        import re

        from rs_transfer.backbones import get_spec
        from rs_transfer.backbones.registry import list_models

        spec = get_spec(backbone)
        if spec.family in self.backbone_families:
            return
        fits = [m for f in self.backbone_families for m in list_models(f)]
        video = any(f.endswith("3d") for f in self.backbone_families)
        twin = (re.sub(r"^(resnet(?:rs)?)(\d+)", r"\g<1>3d\2", backbone) if video
                else re.sub(r"^(resnet(?:rs)?)3d(\d+)", r"\1\2", backbone))
        hint = f" Use --backbone {twin}" if twin in fits else " Choose one of them"
        if video:
            hint += ("; to start from 2D ImageNet weights, pass them with --weights and add --backbone-options "
                     "layout=2d (the named deviation whose keys match torchvision/timm checkpoints): their kernels "
                     "are inflated to 3D (inflate=center|mean)")
        raise UserError(f"task {self.name} takes a {'3D (video)' if video else '2D'} backbone: {', '.join(fits)}; "
                        f"{backbone} is {'a 2D image' if video else 'a 3D video'} model.{hint}.")

    def config_for(self, protocol: str) -> str:
        if protocol not in self.protocols:
            raise UserError(f"task {self.name!r} has no protocol {protocol!r}; it supports: "
                            f"{', '.join(self.protocols)}")
        return self.protocol_configs.get(protocol, self.config)

    def default_data_root(self) -> Path:
        return home() / "data" / (self.data_dirname or self.name)

    def mini_root(self) -> Path:
        return home() / "data" / "mini" / self.name

    def check(self, root: Path) -> DataReport:
        """``check_data`` or, for tasks without one, just 'the folder exists'."""
        if self.check_data is not None:
            return self.check_data(Path(root))
        report = DataReport(self.name, Path(root), self.data_layout, self.data_source)
        if not Path(root).is_dir():
            report.problems.append(f"folder {root} does not exist")
        return report
