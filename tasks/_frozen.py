"""The classification suite's frozen-feature protocols: cached features, the linear probe, few-shot draws, metrics.

- Features (:func:`features`): the backbone's pooled penultimate features of the eval crop
  (``tasks/_tvclass.py`` ``TvClassDataset``), the weight source's normalisation, extracted once per (weights,
  dataset split, resolution, crop, normalisation, pipeline, precision) and cached under ``feature_cache_dir()``
  with their own hash: a probe, a few-shot draw, a second seed or another study cell reuses them; any change to
  the input pipeline or the weights is a new key. The key holds the sha256 of the backbone's state (parameters and
  buffers, not the weights file's name: a renamed or re-downloaded file reuses, a changed weight does not) and of
  the split (torchvision class, data root, item order, labels). Image files edited in place under the same names
  and labels are NOT noticed: delete the cache folder after such an edit.
- ``linear``: :func:`rs_transfer.tasks.classification.linear_probe` (the CIFAR-100 probe, same code), selecting and
  scoring with the task's metric; VOC07 (multi-label): one binary L-BFGS logistic regression per class, penalty
  chosen on the held-out 20 % by 11-point mAP.
- ``fewshot``: k per class (``probe.shots``), drawn class-balanced with ``numpy.random.default_rng([seed, k,
  episode])``; ``probe.episodes`` draws; mean and a 95 % Student-t interval over draws. The penalty is chosen on a
  per-class held-out part of the draw (``max(1, round(0.2 k))`` per class) and refit on all k; k = 1 leaves
  nothing to hold out, so ``probe.one_shot_l2`` is used. ``"vtab1k"``: 1000 random training images, the first 800
  fit and the last 200 select the penalty, then all 1000 refit (VTAB-1k's 800/200 rule). The draws are functions of
  the config (``probe.seed`` = the run's seed, written in by ``configure``; shots, episodes, the rule's name
  ``probe.draw``), hence part of the run's config hash; their digests go to ``results.json`` ``extra.draws``.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rs_transfer.errors import UserError

from .base import RunContext, home
from .classification import mean_per_class_accuracy, voc11_map

DRAW_RULE = "class-balanced-v1"   # the config's probe.draw must name this rule (a changed rule is a new hash)
# (split, size, crop_fraction) -> a dataset of eval crops with ``identity()`` (tasks/_tvclass.py TvClassDataset)
DatasetFactory = Callable[[str, int, float], Any]
PIPELINE = "tvclass-eval-v1: PIL RGB, shorter side to size/crop (bilinear, antialias), centre crop, uint8"


FEATURE_CACHE_ENV = "RS_TRANSFER_FEATURE_CACHE"


def feature_cache_dir() -> Path:
    """``$RS_TRANSFER_FEATURE_CACHE`` (a study points it at its own folder, also in its SLURM cell jobs: transfer12
    ``feature_env``), else ``$RS_TRANSFER_HOME/features``. An environment variable, not a config key: where
    features are kept is no part of a run's identity (the features are keyed by their content)."""
    env = os.environ.get(FEATURE_CACHE_ENV)
    return Path(env).expanduser() if env else home() / "features"


# ---- metrics ------------------------------------------------------------------------------------------------
def scorer(metric: str) -> Any:
    from rs_transfer.tasks.classification import top1_score

    return {"top1": top1_score, "mean_per_class": mean_per_class_accuracy}[metric]


# ---- probes -------------------------------------------------------------------------------------------------
def multilabel_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                     l2_grid: list[float], fit_idx: np.ndarray, hold_idx: np.ndarray,
                     max_iter: int = 1000) -> dict[str, Any]:
    """One binary L-BFGS logistic regression per class (difficult-only images left out of that class), one
    penalty for all classes chosen on the held-out part by 11-point mAP, refit on all training data."""
    from sklearn.linear_model import LogisticRegression

    from rs_transfer.tasks.classification import l2_to_C

    def scores(idx: np.ndarray, lam: float, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), train_y.shape[1]))
        for c in range(train_y.shape[1]):
            use = idx[train_y[idx, c] != 0]
            yc = train_y[use, c] > 0
            if yc.all() or not yc.any():          # one class only in this subset: a constant score
                out[:, c] = float(yc.mean()) if len(yc) else 0.0
                continue
            clf = LogisticRegression(C=l2_to_C(lam, len(use)), solver="lbfgs", max_iter=max_iter)
            out[:, c] = clf.fit(train_x[use], yc).decision_function(x)
        return out

    sweep = [voc11_map(scores(fit_idx, lam, train_x[hold_idx]), train_y[hold_idx]) for lam in l2_grid]
    best = int(np.nanargmax(sweep))
    lam = float(l2_grid[best])
    every = np.arange(len(train_x))
    return {"mAP11": voc11_map(scores(every, lam, test_x), test_y), "l2": lam, "holdout_mAP11": sweep[best],
            "sweep": dict(zip(map(float, l2_grid), sweep))}


def probe(metric: str, tr: tuple[np.ndarray, np.ndarray], te: tuple[np.ndarray, np.ndarray], p: Any,
          fit_idx: np.ndarray, hold_idx: np.ndarray, keep_outputs: bool = True) -> dict[str, Any]:
    """The task's linear probe on (features, labels) with the given selection split. ``keep_outputs``: its test
    predictions become the run's per-sample outputs (single-label metrics; the multi-label mAP keeps none yet)."""
    from rs_transfer.tasks.classification import linear_probe

    if metric == "mAP11":
        return multilabel_probe(*tr, *te, l2_grid=list(p.l2_grid), fit_idx=fit_idx, hold_idx=hold_idx,
                                max_iter=int(p.max_iter))
    return linear_probe(*tr, *te, l2_grid=list(p.l2_grid), split=(fit_idx, hold_idx), max_iter=int(p.max_iter),
                        score=scorer(metric), name=metric, keep_outputs=keep_outputs)


# ---- few-shot draws ---------------------------------------------------------------------------------------------
def draw(labels: np.ndarray, shots: int | str, seed: int, episode: int, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) training indices of one draw (module docstring). Multi-label: k images positive for each
    class, each image drawn once. Raises ``UserError`` when a class has fewer than k images (left)."""
    rng = np.random.default_rng([int(seed), 1000 if shots == "vtab1k" else int(shots), int(episode)])
    if shots == "vtab1k":
        n_fit, n_val = int(p.vtab_train), int(p.vtab_val)
        if len(labels) < n_fit + n_val:
            raise UserError(f"vtab1k needs {n_fit + n_val} training images, the split has {len(labels)}")
        pick = rng.permutation(len(labels))[: n_fit + n_val]
        return pick[:n_fit], pick[n_fit:]
    k = int(shots)
    if k < 1:
        raise UserError(f"shots must be >= 1 (or vtab1k), got {shots}")
    fit, hold, taken = [], [], np.zeros(len(labels), bool)
    # the classes present in the training split (multi-label: with a positive image; real VOC2007 has all 20)
    classes = np.flatnonzero((labels > 0).any(axis=0)) if labels.ndim == 2 else np.unique(labels)
    for c in classes:
        idx = np.flatnonzero((labels[:, c] > 0 if labels.ndim == 2 else labels == c) & ~taken)
        if len(idx) < k:
            raise UserError(f"{k}-shot: class {c} has only {len(idx)} training images")
        chosen = rng.choice(idx, k, replace=False)
        taken[chosen] = True
        n_hold = 0 if k == 1 else max(1, int(round(0.2 * k)))
        fit.append(chosen[: k - n_hold])
        hold.append(chosen[k - n_hold:])
    return np.concatenate(fit), np.concatenate(hold)


def shots_option(shots: list[str] | None, episodes: int | None) -> dict[str, Any]:
    """``--shots`` / ``--episodes`` as config options (``probe.shots`` / ``probe.episodes``); a one-line error for a
    value that is neither a positive integer nor ``vtab1k``."""
    out: dict[str, Any] = {}
    if shots:
        parsed: list[int | str] = []
        for s in shots:
            if str(s) == "vtab1k":
                parsed.append("vtab1k")
            elif str(s).isdigit() and int(s) > 0:
                parsed.append(int(s))
            else:
                raise UserError(f"--shots takes positive integers or vtab1k, got {s!r}")
        out["probe.shots"] = parsed
    if episodes is not None:
        if episodes < 1:
            raise UserError(f"--episodes must be >= 1, got {episodes}")
        out["probe.episodes"] = int(episodes)
    return out


def t_interval(values: list[float]) -> tuple[float, float]:
    """95 % Student-t interval of the mean over draws (scipy.stats.t); a single draw has none (nan)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or np.all(v == v[0]):
        return (float("nan"), float("nan")) if len(v) < 2 else (float(v[0]), float(v[0]))
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return float(lo), float(hi)


# ---- features -----------------------------------------------------------------------------------------------
def state_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes): what the features depend on."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def eval_crop(cfg: Any) -> tuple[int, float]:
    """(size, crop fraction) of the frozen features' eval crop."""
    return int(cfg.resolution), float(cfg.feature_loader.dataset.get("crop_fraction", 0.875))


def features(backbone: torch.nn.Module, ctx: RunContext, cfg: Any, split: str, device: str, digest: str,
             ds: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(features, labels, cache info) of ``ds``, the ``split`` at the eval crop, from the cache when its key matches
    (module docstring)."""
    import torchvision
    from mmengine.dataset import default_collate
    from torch.utils.data import DataLoader

    from rs_transfer.tasks.classification import extract_features

    size, crop = eval_crop(cfg)
    key = {"weights_state": digest, "backbone": ctx.backbone,
           "backbone_kwargs": {k: v for k, v in sorted(ctx.backbone_kwargs.items()) if not k.startswith("weights")},
           "task": ctx.task, "split": split, "data": ds.identity(), "resolution": size, "crop_fraction": crop,
           "mean": [float(v) for v in ctx.normalization["mean"]], "std": [float(v) for v in ctx.normalization["std"]],
           "pipeline": PIPELINE, "torchvision": torchvision.__version__,
           "precision": "bf16+channels_last" if device == "cuda" else "fp32"}
    khash = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = feature_cache_dir() / ctx.task / f"{split}-{khash[:24]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["x"], z["y"], {"hash": khash, "path": str(path), "reused": True}
    loader = DataLoader(ds, batch_size=int(cfg.feature_loader.batch_size), shuffle=False,
                        num_workers=int(cfg.feature_loader.num_workers), collate_fn=default_collate,
                        pin_memory=device == "cuda")
    x, y = extract_features(backbone, loader, mean=ctx.normalization["mean"], std=ctx.normalization["std"],
                            resolution=None, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:                         # written whole, then renamed: readers never see half a file
        np.savez(f, x=x, y=y)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(key, indent=1, default=str))
    return x, y, {"hash": khash, "path": str(path), "reused": False}


def run_protocol(cfg: Any, ctx: RunContext, metric: str, dataset: DatasetFactory) -> dict[str, float]:
    """``linear`` / ``fewshot`` on cached frozen features (module docstring); ``metric`` is the task's headline,
    ``dataset(split, size, crop_fraction)`` its eval-crop dataset (``tasks/_tvclass.py`` passes both)."""
    from mmengine.config import ConfigDict
    from mmengine.registry import MODELS

    from rs_transfer.runner import check_normalization

    p = cfg.probe
    if str(p.get("draw", DRAW_RULE)) != DRAW_RULE:
        raise UserError(f"probe.draw must be {DRAW_RULE!r} (the only draw rule this version implements)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone = MODELS.build(dict(cfg.model.backbone))
    backbone.init_weights()
    check_normalization(backbone, ctx.normalization)
    digest = state_digest(backbone)
    train_ds = dataset("train", *eval_crop(cfg))
    tr_x, tr_y, tr_info = features(backbone, ctx, cfg, "train", device, digest, train_ds)
    te_x, te_y, te_info = features(backbone, ctx, cfg, "test", device, digest, dataset("test", *eval_crop(cfg)))
    ctx.extra["feature_cache"] = {"train": tr_info, "test": te_info}
    if ctx.protocol == "linear":
        from .classification import selection_split

        fit, hold = selection_split(len(tr_x), p.holdout, int(p.seed), train_ds.creators_val)
        ctx.extra["selection"] = {"holdout": p.holdout, "fit": int(len(fit)), "held_out": int(len(hold))}
        out = probe(metric, (tr_x, tr_y), (te_x, te_y), p, fit, hold)
        ctx.extra["l2_sweep"] = out.pop("sweep")
        return out
    if ctx.protocol != "fewshot":
        raise UserError(f"task {ctx.task}: protocol {ctx.protocol!r} is not a frozen-feature protocol")
    out: dict[str, float] = {}
    ctx.extra["draws"], ctx.extra["episodes"] = {}, {}
    for shots in list(p.shots):
        values, digests = [], []
        for e in range(int(p.episodes)):
            fit, hold = draw(tr_y, shots, int(p.seed), e, p)
            digests.append(hashlib.sha256(np.sort(np.concatenate([fit, hold])).tobytes()).hexdigest()[:16])
            idx = np.concatenate([fit, hold])
            local_fit, local_hold = np.arange(len(fit)), np.arange(len(fit), len(idx))
            if not len(hold):      # 1-shot: nothing to hold out, the configured penalty
                one = ConfigDict(l2_grid=[float(p.one_shot_l2)], max_iter=p.max_iter)
                res = probe(metric, (tr_x[idx], tr_y[idx]), (te_x, te_y), one, local_fit, local_fit,
                            keep_outputs=False)
            else:
                res = probe(metric, (tr_x[idx], tr_y[idx]), (te_x, te_y), p, local_fit, local_hold,
                            keep_outputs=False)
            values.append(float(res[metric]))
        tag = f"{shots}shot" if shots != "vtab1k" else "vtab1k"
        lo, hi = t_interval(values)
        out.update({f"{tag}_mean": float(np.mean(values)), f"{tag}_ci95_low": lo, f"{tag}_ci95_high": hi,
                    f"{tag}_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0})
        ctx.extra["draws"][tag], ctx.extra["episodes"][tag] = digests, values
    last = list(p.shots)[-1]
    out[metric] = out[f"{last}shot_mean" if last != "vtab1k" else "vtab1k_mean"]
    ctx.extra["headline"] = f"{metric} = mean over {int(p.episodes)} draws at shots={last}"
    return out
