"""Which registered model a checkpoint fits, for the last line of a failed strict load (issue 11 §3): a torchvision
ResNet-50 loaded into ``resnetrs50`` should end with "use --backbone resnet50", not with 300 key names.

Candidates are every registered 2D model and every model variant a named source declares (SimCLR widths, sk1).
They are built on the ``meta`` device (shapes only, no memory, no initialisation cost) and compared on backbone
keys and shapes; classifier heads are ignored, as in the load itself.
"""
from __future__ import annotations

import re
from typing import Any

import torch

HEAD = ("fc.", "head.")


def _signature(sd: dict[str, Any], video: bool = False) -> dict[str, tuple[int, ...]]:
    """Backbone keys and shapes; for video models the temporal kernel size is left out (2D kernels inflate)."""
    def shape(v: Any) -> tuple[int, ...]:
        s = tuple(v.shape)
        return s[:2] + s[3:] if video and len(s) == 5 else s

    return {k: shape(v) for k, v in sd.items() if not k.startswith(HEAD) and not k.endswith("num_batches_tracked")}


def _blocks(sd: dict[str, Any]) -> tuple[int, ...]:
    """Blocks per stage of a state_dict in our names (``layer{s}.{i}.``): a cheap pre-filter before building."""
    found: dict[int, int] = {}
    for k in sd:
        if (m := re.match(r"^layer(\d)\.(\d+)\.", k)):
            found[int(m[1])] = max(found.get(int(m[1]), 0), int(m[2]) + 1)
    return tuple(found.get(s, 0) for s in range(1, 5))


def _candidates(blocks: tuple[int, ...], video: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, arch, options) with ``blocks`` blocks per stage: registered models of the same kind (2D, or 3D for a
    video model: a 2D checkpoint is inflated), then the named sources' model variants (2D)."""
    from rs_transfer.backbones import get_spec, list_models
    from rs_transfer.backbones.resnet import BLOCKS_PER_DEPTH
    from rs_transfer.weights.sources import SOURCES

    def layers(arch: str, options: dict[str, Any]) -> tuple[int, ...]:
        kw = {**get_spec(arch).kwargs, **options}
        return tuple(kw.get("layers") or BLOCKS_PER_DEPTH.get(kw.get("depth", 0), ()))

    families = ("resnet3d", "resnetrs3d") if video else ("resnet", "resnetrs")
    out = [(name, name, {}) for name in list_models() if get_spec(name).family in families]
    seen: set[str] = set()
    for s in (() if video else SOURCES.values()):
        if s.model_options and (key := s.model_hint()) not in seen:
            seen.add(key)
            out.append((s.name, s.arch, dict(s.model_options)))
    return [c for c in out if layers(c[1], c[2]) == blocks]


def fitting_models(sd: dict[str, torch.Tensor], layout: str, *, video: bool = False) -> str | None:
    """A one-line hint naming the model(s) ``sd`` fits, or None. ``video``: the model being loaded is 3D."""
    from rs_transfer.backbones import create_model

    want = _signature(sd, video)
    fits: list[str] = []
    for label, arch, options in _candidates(_blocks(sd), video):
        try:
            with torch.device("meta"):
                model = create_model(arch, **options)
        except Exception:  # noqa: BLE001  (a variant that cannot be built here is simply not a candidate)
            continue
        if _signature(model.state_dict(), video) == want and not any(f.startswith(f"--backbone {arch} ") or
                                                              f == f"--backbone {arch}" for f in fits):
            # the same shapes under the same name with other options (e.g. padding) is not another answer
            opts = " ".join(f"{k}={v}" for k, v in options.items())
            fits.append(f"--backbone {arch}" + (f" --backbone-options {opts}" if opts else "")
                        + (f" (as named source {label})" if label != arch else ""))
    if not fits:
        return None
    first = fits[0].split()[1]
    also = f" (also fits: {'; '.join(fits[1:3])})" if len(fits) > 1 else ""
    return f"this is a {layout} checkpoint that fits {first}: use {fits[0]}{also}"
