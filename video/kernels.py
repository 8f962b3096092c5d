"""Temporal kernel layouts of the 3D models as plain data (no torch), so that the model table
(:mod:`rs_transfer.video.models`) registers without heavy imports: TF Model Garden's CVRL layout for ``ResNet3D50``
and the per-stage kernels of ``ResNet3DRS``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cvrl_kernels(layers: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """TF ``ResNet3D50`` temporal kernels, (3,3,3) (3,1,3,1) (3,1,3,1,3,1) (1,3,1) at 50 layers; other depths
    continue each stage's pattern (stage 1 all 3; stages 2-3 start 3 and alternate; stage 4 starts 1)."""
    first = (3, 3, 3, 1)
    out = []
    for s, n in enumerate(layers):
        if s == 0:
            out.append((3,) * n)
        else:
            out.append(tuple(first[s] if j % 2 == 0 else 4 - first[s] for j in range(n)))
    return tuple(out)


# k400_resnet3drs_*: one temporal kernel per stage, repeated over its blocks (TF ``build_resnet3d_rs``).
RS_STAGE_KERNELS: tuple[int, int, int, int] = (1, 1, 3, 3)


def expand_temporal_kernels(spec: str | Sequence[Any], layers: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """``"cvrl"``, ``"rs"``, one int per stage (repeated over the stage, as TF's RS builder does) or one tuple per
    stage with one kernel per block -> one tuple per stage with one kernel per block."""
    if isinstance(spec, str):
        if spec == "cvrl":
            return cvrl_kernels(layers)
        if spec == "rs":
            spec = RS_STAGE_KERNELS
        else:
            raise ValueError(f"temporal_kernels must be 'cvrl', 'rs' or a per-stage/per-block list, got {spec!r}")
    spec = list(spec)
    if len(spec) != len(layers):
        raise ValueError(f"temporal_kernels needs one entry per stage ({len(layers)}), got {spec}")
    out = []
    for s, (k, n) in enumerate(zip(spec, layers)):
        ks = (int(k),) * n if isinstance(k, int) else tuple(int(v) for v in k)
        if len(ks) != n:
            raise ValueError(f"temporal_kernels stage {s + 1}: {n} blocks but kernels {ks}")
        out.append(ks)
    return tuple(out)
