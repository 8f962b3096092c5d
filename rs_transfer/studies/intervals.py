"""95 % intervals and paired tests from saved per-sample outputs (``WORK_DIR/eval_outputs.npz``).

Why a bootstrap that RECOMPUTES the dataset-level metric: mIoU is sum(I) / sum(U) per class (not a mean of
per-image IoUs) and AP ranks all detections of the test set together, so neither is a mean of per-sample numbers;
resampling test samples and recomputing the metric on each resample is the one interval valid for all tasks.

Everything is expressed through a :class:`Scorer`: the task's metric as a function of integer sample WEIGHTS
(how often each test sample occurs in a resample; all ones = the test set itself), vectorised over rows. The
identity weights give exactly the number the task reported (tested per task). Resampling and intervals are
scipy's (``scipy.stats.bootstrap``, BCa by default; ``permutation_test``; ``false_discovery_control``); only the
two-level seeds x images bootstrap, which scipy does not have, is drawn here.

- :func:`interval`: one run, bootstrap over test samples.
- :func:`seeds_interval`: several seeds of one cell: resample seeds, then images (percentile interval).
- :func:`paired`: two sources on the same test set: the difference, its interval (the SAME resampled samples for
  both) and a two-sided paired permutation p-value (each sample's two outputs swapped at random).
- :func:`adjust`: Benjamini-Hochberg adjusted p-values across a table.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rs_transfer.eval_outputs import EvalOutputs

RESAMPLES = 1000     # default bootstrap / permutation resamples (>= 1000: stable 2.5 % / 97.5 % quantiles)
CONFIDENCE = 0.95
SEED = 0
_EPS32 = np.finfo(np.float32).eps


@dataclass
class Scorer:
    """``score(w)``: the metric for sample weights ``w`` of shape (rows, n); ``n`` samples; ``ids``."""

    kind: str
    key: str
    n: int
    ids: np.ndarray
    _fn: Any
    cost: int = 0          # array elements one row of weights costs (bounds the rows scored at once)

    def score(self, weights: np.ndarray) -> np.ndarray:
        w = np.atleast_2d(np.asarray(weights))
        if w.shape[-1] != self.n:
            raise ValueError(f"weights for {w.shape[-1]} samples, the outputs have {self.n}")
        return np.asarray(self._fn(w), dtype=np.float64)

    def value(self) -> float:
        """The metric on the test set itself (all weights one)."""
        return float(self.score(np.ones((1, self.n), np.int64))[0])


def scorer(outputs: EvalOutputs | Sequence[EvalOutputs], key: str | None = None) -> Scorer:
    """The metric ``key`` (default: the headline ``meta["metric"]``) as a :class:`Scorer`. Several outputs of the
    same kind are concatenated into one sample axis (used by :func:`paired` for the permutation test)."""
    outs = [outputs] if isinstance(outputs, EvalOutputs) else list(outputs)
    kinds = {o.kind for o in outs}
    if len(kinds) != 1:
        raise ValueError(f"cannot score outputs of different kinds together: {sorted(kinds)}")
    kind = kinds.pop()
    key = key or str(outs[0].meta.get("metric", ""))
    ids = np.concatenate([o.ids for o in outs])
    cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0].arrays if not k.startswith(("det_", "gt_"))}
    if "split" in cat:     # ImageNet: the headline is the first split (val); minival rows are not its samples
        keep = cat["split"] == 0
        ids, cat = ids[keep], {k: v[keep] for k, v in cat.items()}
    if kind == "classification":
        fn = _classification(cat, key)
    elif kind == "segmentation":
        fn = _segmentation(cat, key, outs[0].meta)
    elif kind == "depth":
        fn = _depth(cat, key, outs[0].meta)
    else:
        fn = _detection(outs, key)
    cost = sum(len(o["det_score"]) for o in outs) if kind == "detection" else len(ids)
    return Scorer(kind, key, len(ids), ids, fn, max(cost, len(ids)))


def metric(outputs: EvalOutputs, key: str | None = None) -> float:
    """The dataset-level metric recomputed from the outputs, exactly as the task computed it."""
    return scorer(outputs, key).value()


# ---- the metrics, as functions of sample weights ---------------------------------------------------------------
def _classification(a: dict[str, np.ndarray], key: str) -> Any:
    if key == "mean_per_class":
        return _mean_per_class(a)
    if not key.startswith("top") or not key[3:].isdigit():
        raise ValueError(f"classification outputs give top<k> and mean_per_class metrics, not {key!r}")
    k = int(key[3:])
    hits = (a["top5"][:, :k] == a["label"][:, None]).any(axis=1).astype(np.float64)

    def fn(w: np.ndarray) -> np.ndarray:   # 100 * (hits / n), the order of operations of Accuracy
        return 100.0 * ((w @ hits) / w.sum(axis=1))
    return fn


def _mean_per_class(a: dict[str, np.ndarray]) -> Any:
    """Mean over the classes present of each class's top-1 (the transfer suite's fine-grained metric): a resampled
    test set weights each class's hits by its own resampled count; a class drawn zero times is left out."""
    labels = a["label"].astype(np.int64)
    hit = (a["top5"][:, 0] == labels).astype(np.float64)
    classes = np.unique(labels)
    member = (labels[None, :] == classes[:, None]).astype(np.float64)          # classes x samples

    def fn(w: np.ndarray) -> np.ndarray:
        if w.shape[0] == 1 and np.all(w == 1):   # exactly Accuracy's / the probe's order of operations
            return np.array([100.0 * np.mean([hit[labels == c].mean() for c in classes])])
        n = w @ member.T
        with np.errstate(invalid="ignore", divide="ignore"):
            per = np.where(n > 0, (w @ (member * hit).T) / np.where(n > 0, n, 1), np.nan)
        return 100.0 * np.nanmean(per, axis=1)
    return fn


def _segmentation(a: dict[str, np.ndarray], key: str, meta: dict[str, Any]) -> Any:
    if key != "mIoU":
        raise ValueError(f"segmentation outputs give mIoU, not {key!r}")
    inter, union = a["intersect"].astype(np.float64), a["union"].astype(np.float64)
    digits = meta.get("rounding")

    def fn(w: np.ndarray) -> np.ndarray:
        si, su = w @ inter, w @ union
        if digits is not None and w.shape[0] == 1 and np.all(w == 1):
            # exactly mmseg's IoUMetric: float32 areas and division, nanmean, percent, rounded
            iou = (si[0].astype(np.float32) / su[0].astype(np.float32))
            return np.array([np.round(np.nanmean(iou) * 100, digits)], dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(su > 0, si / np.where(su > 0, su, 1), np.nan)
        return 100.0 * np.nanmean(iou, axis=1)
    return fn


def _depth(a: dict[str, np.ndarray], key: str, meta: dict[str, Any]) -> Any:
    keys = list(meta["per_image_keys"])
    if key not in keys:
        raise ValueError(f"depth outputs give {keys}, not {key!r}")
    col = a["per_image"][:, keys.index(key)]
    scale = 100.0 if key in meta.get("percent_keys", ()) else 1.0

    def fn(w: np.ndarray) -> np.ndarray:   # the task's mean over images of per-image values
        if w.shape[0] == 1 and np.all(w == 1):
            return np.array([sum(col.tolist()) / len(col) * scale])   # its exact summation order
        return scale * (w @ col) / w.sum(axis=1)
    return fn


def _detection(outs: list[EvalOutputs], key: str) -> Any:
    """Per class: every detection's TP/FP decided once per image by mmdet's ``tpfp_default`` (IoU 0.5, +1-pixel
    coordinates, difficult objects ignored), sorted by score once; a resample reweights detections and ground truth
    by its images' weights. Weighted cumulative sums equal repeating the images, so each row is the AP of its
    resample; the ones row is exactly mmdet's ``eval_map`` (same sort, float32 cumulative sums, same averaging)."""
    from mmdet.evaluation.functional.mean_ap import tpfp_default

    mode = {"AP50": "11points", "AP50_area": "area"}.get(key)
    if mode is None:
        raise ValueError(f"detection outputs give AP50 (11-point) or AP50_area, not {key!r}")
    n_cls = int(outs[0].meta["num_classes"])
    gts = []
    for o in outs:
        gts.append(np.zeros((len(o), n_cls), np.int64))
        easy = ~o["gt_difficult"]
        np.add.at(gts[-1], (o["gt_image"][easy], o["gt_label"][easy].astype(int)), 1)
    gts = np.concatenate(gts)
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n_cls)]
    offset = 0
    for o in outs:
        d_by = _by_image(o["det_image"], len(o))
        g_by = _by_image(o["gt_image"], len(o))
        for i in range(len(o)):
            d, g = d_by[i], g_by[i]            # this image's rows, in their saved (= mmdet's) order
            dl, gl, hard = o["det_label"][d], o["gt_label"][g], o["gt_difficult"][g]
            for c in range(n_cls):
                dc, gc = d[dl == c], g[gl == c]
                box = np.hstack([o["det_box"][dc], o["det_score"][dc][:, None]])
                tp, fp = tpfp_default(box, o["gt_box"][gc[~hard[gl == c]]], o["gt_box"][gc[hard[gl == c]]],
                                      0.5, None, True)
                parts[c].append((np.full(len(box), offset + i), box, tp[0], fp[0]))
        offset += len(o)
    per_class = []
    for c in range(n_cls):
        imgs, dets, tps, fps = zip(*parts[c])
        order = np.argsort(-np.vstack(dets)[:, -1])    # eval_map's sort, on the same stacked array
        per_class.append((np.concatenate(imgs)[order], np.concatenate(tps)[order], np.concatenate(fps)[order]))

    def fn(w: np.ndarray) -> np.ndarray:
        aps, has = [], []
        for c, (img, tp, fp) in enumerate(per_class):
            wd = w[:, img]
            tpc = np.cumsum(wd * tp, axis=1).astype(np.float32)
            fpc = np.cumsum(wd * fp, axis=1).astype(np.float32)
            num = w @ gts[:, c]
            recalls = tpc / np.maximum(num[:, None], _EPS32)
            precisions = tpc / np.maximum(tpc + fpc, _EPS32)
            aps.append(_average_precision(recalls, precisions, mode))
            has.append(num > 0)
        ap, ok = np.stack(aps, axis=1), np.stack(has, axis=1)
        return np.array([100.0 * float(row[m].mean()) if m.any() else 0.0 for row, m in zip(ap, ok)])
    return fn


def _by_image(image: np.ndarray, n: int) -> list[np.ndarray]:
    """Row indices of each image (stable: each image's rows keep their order)."""
    order = np.argsort(image, kind="stable")
    return np.split(order, np.searchsorted(image[order], np.arange(1, n)))


def _average_precision(recalls: np.ndarray, precisions: np.ndarray, mode: str) -> np.ndarray:
    """mmdet's ``average_precision`` row by row (float32 results), vectorised over rows: the envelope by a
    running maximum, the 11 thresholds as masks."""
    rows = recalls.shape[0]
    if mode == "area":
        mrec = np.hstack((np.zeros((rows, 1), recalls.dtype), recalls, np.ones((rows, 1), recalls.dtype)))
        mpre = np.hstack((np.zeros((rows, 1), recalls.dtype), precisions, np.zeros((rows, 1), recalls.dtype)))
        mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
        ap = np.zeros(rows, np.float32)
        for i in range(rows):
            ind = np.where(mrec[i, 1:] != mrec[i, :-1])[0]
            ap[i] = np.sum((mrec[i, ind + 1] - mrec[i, ind]) * mpre[i, ind + 1])
        return ap
    ap = np.zeros(rows, np.float32)
    for thr in np.arange(0, 1 + 1e-3, 0.1):
        masked = np.where(recalls >= thr, precisions, -np.inf)
        best = masked.max(axis=1, initial=-np.inf)
        ap = (ap.astype(np.float64) + np.where(np.isfinite(best), best, 0.0)).astype(np.float32)
    return ap / np.float32(11)


# ---- intervals -------------------------------------------------------------------------------------------------
@dataclass
class Interval:
    """A value with its interval; ``method`` says how it was computed (shown in reports)."""

    value: float
    low: float
    high: float
    method: str
    resamples: int
    n: int
    seeds: int = 1

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def _weights(idx: np.ndarray, n: int) -> np.ndarray:
    """Index resamples (..., m) -> weight rows (rows, n): how often each sample was drawn."""
    idx = np.asarray(idx).reshape(-1, np.shape(idx)[-1])
    rows = np.arange(len(idx))[:, None] * n
    return np.bincount((idx + rows).ravel(), minlength=len(idx) * n).reshape(len(idx), n)


BCA_DETECTION_LIMIT = 2e8   # test images x detections above which AP's BCa jackknife is too slow (see below)


def _affordable(method: str, s: Scorer) -> str:
    """BCa needs one jackknife recomputation of the metric per test sample on top of the resamples. For AP each is a
    pass over every detection: VOC07 test (4,952 images, ~0.5 M detections) would take ~5x the 1,000 resamples
    themselves (measured: 200 resamples of 1,000 images x 50 detections in 3 s, 2 shared cores), so such sets get
    the percentile interval, and its ``method`` says so."""
    if method == "BCa" and s.kind == "detection" and s.n * s.cost > BCA_DETECTION_LIMIT:
        return "percentile"
    return method


def _batch(n: int) -> int:
    return max(1, int(2e7 // max(n, 1)))   # keeps the (rows, n) weight matrices near 160 MB


def _scipy_interval(statistic: Any, n: int, *, resamples: int, confidence: float, seed: int,
                    method: str, cost: int = 0) -> tuple[float, float, str]:
    """scipy's bootstrap over sample indices; BCa falls back to percentile when the resampled values are
    degenerate (e.g. 100 % accuracy everywhere), where BCa is undefined."""
    import warnings

    from scipy.stats import bootstrap

    for m in dict.fromkeys([method, "percentile"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((np.arange(n),), statistic, n_resamples=resamples, vectorized=True, axis=-1,
                            confidence_level=confidence, method=m, rng=np.random.default_rng(seed),
                            batch=_batch(max(n, cost)))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return low, high, m
    dist = res.bootstrap_distribution
    return float(np.min(dist)), float(np.max(dist)), "degenerate"


def interval(s: Scorer, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED,
             method: str = "BCa") -> Interval:
    """Bootstrap interval of one run's metric: test samples resampled with replacement, the metric recomputed."""
    def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return s.score(_weights(idx, s.n)).reshape(np.shape(idx)[:-1])
    low, high, used = _scipy_interval(stat, s.n, resamples=resamples, confidence=confidence, seed=seed,
                                      method=_affordable(method, s), cost=s.cost)
    return Interval(s.value(), low, high, f"bootstrap ({used}) over {s.n} test samples", resamples, s.n)


def seeds_interval(scorers: Sequence[Scorer], *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                   seed: int = SEED) -> Interval:
    """Several seeds of one cell on the same test set: each replicate resamples the seeds, then the test samples
    (the same samples for every seed drawn: the test set is shared), and averages the seeds' metrics; percentile
    interval. One seed reduces to the percentile bootstrap over samples."""
    scorers = list(scorers)
    n = scorers[0].n
    if any(sc.n != n or not np.array_equal(sc.ids, scorers[0].ids) for sc in scorers):
        raise ValueError("seeds of one cell must be evaluated on the same test samples (same ids)")
    values = _two_level(lambda w: np.stack([sc.score(w) for sc in scorers], axis=1), len(scorers), n,
                        resamples=resamples, seed=seed, cost=scorers[0].cost)
    alpha = (1 - confidence) / 2
    mean = float(np.mean([sc.value() for sc in scorers]))
    return Interval(mean, float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)),
                    f"two-level bootstrap (percentile): {len(scorers)} seeds, then {n} test samples", resamples, n,
                    seeds=len(scorers))


def _two_level(per_seed: Callable[[np.ndarray], np.ndarray], seeds: int, n: int, *, resamples: int, seed: int,
               cost: float) -> np.ndarray:
    """The two-level bootstrap's replicates: each draws ``seeds`` seeds (or seed pairs) with replacement and ``n``
    test samples with replacement (the same samples for every seed: the test set is shared), then averages the
    drawn seeds' values. ``per_seed(weights)``: the (rows, seeds) values at the sample weights. In batches sized
    by ``cost``, as every resampler here."""
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    step = _batch(cost)
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        picks = rng.integers(seeds, size=(rows, seeds))
        w = _weights(rng.integers(n, size=(rows, n)), n)
        values[start:start + rows] = np.take_along_axis(per_seed(w), picks, axis=1).mean(axis=1)
    return values


@dataclass
class Comparison:
    """``a - b`` on the same test samples: the difference's interval and the paired permutation p-value."""

    difference: Interval
    p_value: float
    test: str


def paired(a: EvalOutputs | Sequence[EvalOutputs], b: EvalOutputs | Sequence[EvalOutputs], key: str | None = None,
           *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED,
           method: str = "BCa") -> Comparison:
    """Source ``a`` minus source ``b`` on the same test set (samples matched by id). Lists = several seeds, paired
    seed by seed (``a[i]`` with ``b[i]``): the difference is the mean over seed pairs; its interval resamples the
    seed pairs, then the test samples (percentile); the permutation test swaps a sample's two outputs in every
    seed pair at once. One pair: scipy's bootstrap (BCa by default) over the samples, the same resample for both."""
    from scipy.stats import permutation_test

    la = [a] if isinstance(a, EvalOutputs) else list(a)
    lb = [b] if isinstance(b, EvalOutputs) else list(b)
    if not la or len(la) != len(lb):
        raise ValueError(f"paired seeds: {len(la)} runs against {len(lb)}; pair them seed by seed")
    ids = la[0].ids
    for o in la + lb:
        if len(o) != len(ids) or set(o.ids.tolist()) != set(ids.tolist()):
            raise ValueError("a paired comparison needs the same test samples in every run (sample ids differ)")
    both = [scorer([_reorder(x, ids), _reorder(y, ids)], key) for x, y in zip(la, lb)]   # units: a's, then b's
    n = len(ids)

    def diff_w(wa: np.ndarray, wb: np.ndarray) -> np.ndarray:   # (pairs, rows)
        z = np.zeros_like(wa)
        return np.stack([s.score(np.hstack([wa, z])) - s.score(np.hstack([z, wb])) for s in both])

    ones = np.ones((1, n), np.int64)
    value = float(diff_w(ones, ones).mean())
    if len(both) == 1:
        def boot(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            w = _weights(idx, n)
            return diff_w(w, w)[0].reshape(np.shape(idx)[:-1])
        low, high, used = _scipy_interval(boot, n, resamples=resamples, confidence=confidence, seed=seed,
                                          method=_affordable(method, both[0]), cost=both[0].cost)
        how = f"paired bootstrap ({used}) over {n} test samples"
    else:
        values = _two_level(lambda w: diff_w(w, w).T, len(both), n, resamples=resamples, seed=seed,
                            cost=both[0].cost)
        alpha = (1 - confidence) / 2
        low, high = float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
        how = f"paired two-level bootstrap (percentile): {len(both)} seed pairs, then {n} test samples"

    def perm(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        wx, wy = _weights(x, 2 * n), _weights(y, 2 * n)
        return np.mean([s.score(wx) - s.score(wy) for s in both], axis=0).reshape(np.shape(x)[:-1])
    res = permutation_test((np.arange(n), np.arange(n) + n), perm, permutation_type="samples", vectorized=True,
                           n_resamples=resamples, axis=-1, rng=np.random.default_rng(seed + 1),
                           batch=_batch(both[0].cost))
    diff = Interval(value, low, high, how, resamples, n, seeds=len(both))
    return Comparison(diff, float(res.pvalue), "paired permutation test (each test sample's two outputs swapped), "
                                               "two-sided")


def _reorder(o: EvalOutputs, ids: np.ndarray) -> EvalOutputs:
    """``o`` with its samples in the order of ``ids``."""
    if np.array_equal(o.ids, ids):
        return o
    if o.kind == "detection":
        pos = {s: i for i, s in enumerate(o.ids.tolist())}
        new = np.array([pos[s] for s in ids.tolist()])
        inv = np.empty_like(new)
        inv[new] = np.arange(len(new))
        arrays = dict(o.arrays, det_image=inv[o["det_image"]], gt_image=inv[o["gt_image"]])
        return EvalOutputs(o.kind, o.meta, ids, arrays)
    order = np.argsort(o.ids)[np.searchsorted(np.sort(o.ids), ids)]
    return EvalOutputs(o.kind, o.meta, ids, {k: v[order] for k, v in o.arrays.items()})


def adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``); NaN entries stay NaN."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out.tolist()
