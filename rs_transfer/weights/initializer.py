"""``rs_transfer.Pretrained``: the mmengine weight initialiser that loads a backbone's ``weights``.

A backbone given ``weights=...`` sets ``init_cfg = dict(type="rs_transfer.Pretrained", source=..., ...)``;
mmengine's ``BaseModule.init_weights`` (called by the Runner, by mmdet/mmseg, or by hand) builds this initialiser
through :mod:`rs_transfer.registry` and calls it on the backbone. The model therefore never imports the loader.
Within ``rs-transfer run`` the runner has already read the file (it needs the normalisation before the model is
built), and :func:`rs_transfer.weights.read_source` hands back that read: the checkpoint is opened once per run.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from rs_transfer.registry import WEIGHT_INITIALIZERS

from .loader import load_weights


@WEIGHT_INITIALIZERS.register_module(name="Pretrained")
class PretrainedWeights:
    """Load ``source`` into the module with :func:`rs_transfer.load_weights` and log its report.

    ``inflate`` (3D models): how 2D kernels become 3D (``center`` or ``mean``, see ``ResNet3D``)."""

    def __init__(self, source: str, strict: bool = True, trust: bool = False, normalization: str | None = None,
                 inflate: str | None = None) -> None:
        self.source, self.strict, self.trust = source, strict, trust
        self.normalization, self.inflate = normalization, inflate
        self.wholemodule = False   # mmengine sets this attribute on every initialiser

    def __call__(self, module: nn.Module) -> None:
        from mmengine.logging import print_log

        extra: dict[str, Any] = {}
        if self.inflate is not None:
            extra["inflate"] = {"center": "center", "mean": "uniform"}[self.inflate]
        report = load_weights(module, self.source, strict=self.strict, trust=self.trust,
                              normalization=self.normalization, **extra)
        note = f"\n  2D kernels inflated with mode {self.inflate!r}" if self.inflate is not None else ""
        print_log(report.summary() + note, logger="current")

    def __repr__(self) -> str:
        return f"rs_transfer.Pretrained(source={self.source!r})"
