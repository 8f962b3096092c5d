"""Image classification on the one runner: a classifier model, a top-k accuracy metric, and frozen-feature probes.

mmpretrain is not part of the stack (it pins mmcv < 2.1 at import in the versions that match mmengine 0.10), so the
two pieces a classification fine-tune needs from it are written here, small:

- :class:`ImageClassifier`: ``backbone`` (a ResNetRS classifier, ``num_classes`` = the task's) + cross-entropy with
  optional label smoothing; optionally resizes the batch to ``resolution`` on the device (a guard: the CIFAR
  datasets already crop and resize), and sets every BatchNorm's ``momentum`` (``bn_momentum``: the fine-tuning
  recipe's value, SimCLR B.8).
- :class:`Accuracy`: top-1/top-5 in percent (Table 4 reports percentages).
- :func:`linear_probe` / :func:`knn_classify`: the frozen-feature protocols (PROTOCOLS.md, CIFAR-100).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import METRICS, MODELS

from rs_transfer.errors import UserError


def simclr_bn_momentum(train_size: int, global_batch: int) -> float:
    """SimCLR B.8 / Kornblith et al.: BN statistics decay max(1 - 10/s, 0.9) with s steps per epoch (TF convention,
    running = decay x running + (1 - decay) x batch), i.e. a horizon of a tenth of an epoch; as PyTorch's momentum
    (1 - decay): min(10 / s, 0.1). CIFAR-100 at 256: s = 50,000 / 256 = 195.3 -> 0.0512 (PyTorch's default: 0.1)."""
    return min(10.0 * global_batch / train_size, 0.1)


@MODELS.register_module(force=True)
class ImageClassifier(BaseModel):
    """``backbone`` config (``type=ResNetRS``, classifier mode) + label-smoothed cross-entropy.

    ``data_samples`` are the integer labels (a tensor after ``default_collate``). ``predict`` returns one dict per
    sample, ``{"scores": top-k indices, "label": int}``, which is all :class:`Accuracy` needs. ``multilabel``
    (VOC2007 classification): targets are N x C of 1 / 0 (ignored: difficult only) / -1, the loss is the mean
    binary cross-entropy over the non-ignored entries, and ``predict`` returns every class's logit
    (``{"scores": C logits, "label": C targets}``) for :class:`MultiLabelMAP`.
    """

    def __init__(self, backbone: dict, *, label_smoothing: float = 0.0, resolution: int | None = None,
                 bn_momentum: float | None = None, topk: Sequence[int] = (1, 5), multilabel: bool = False,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        if bn_momentum is not None:   # PyTorch convention: running = (1 - m) * running + m * batch statistic
            for m in self.backbone.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = float(bn_momentum)
        self.label_smoothing = label_smoothing
        self.resolution = resolution
        self.maxk = max(topk)
        self.multilabel = bool(multilabel)

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = "tensor") -> Any:
        if self.resolution and tuple(inputs.shape[-2:]) != (self.resolution, self.resolution):
            inputs = F.interpolate(inputs, size=(self.resolution, self.resolution), mode="bilinear",
                                   align_corners=False)
        logits = self.backbone(inputs)
        if mode == "tensor":
            return logits
        if self.multilabel:
            return self._multilabel(logits, torch.as_tensor(data_samples, device=logits.device).float(), mode)
        labels = torch.as_tensor(data_samples, device=logits.device).long()
        if mode == "loss":
            return {"loss": F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)}
        if mode == "predict":
            top = logits.float().topk(min(self.maxk, logits.shape[1]), dim=1).indices.cpu()
            return [{"scores": t, "label": int(y)} for t, y in zip(top, labels.cpu())]
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")


    def _multilabel(self, logits: torch.Tensor, targets: torch.Tensor, mode: str) -> Any:
        if mode == "loss":
            keep = targets != 0
            loss = F.binary_cross_entropy_with_logits(logits.float(), (targets > 0).float(), reduction="none")
            return {"loss": (loss * keep).sum() / keep.sum().clamp(min=1)}
        if mode == "predict":
            return [{"scores": s, "label": t} for s, t in zip(logits.float().cpu(), targets.cpu())]
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")


@METRICS.register_module(force=True)
class MultiLabelMAP(BaseMetric):
    """VOC2007 11-point mAP in percent (key ``mAP11``) from :class:`ImageClassifier`'s multi-label predictions."""

    default_prefix = None

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            self.results.append((np.asarray(s["scores"], np.float64), np.asarray(s["label"], np.int8)))

    def compute_metrics(self, results: list) -> dict[str, float]:
        scores, labels = np.stack([r[0] for r in results]), np.stack([r[1] for r in results])
        return {"mAP11": voc11_map(scores, labels)}


def mean_per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of each class's accuracy, percent (Kornblith et al.'s metric
    for Aircraft, Pets, Caltech-101 and Flowers)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(100.0 * np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def voc11_ap(scores: np.ndarray, gt: np.ndarray) -> float:
    """VOC2007 11-point interpolated AP of one class: ``gt`` 1 (positive), -1 (negative), 0 (difficult only:
    ignored, as the devkit's ``VOCevalcls``). Mean over t = 0, 0.1, ..., 1 of the best precision at recall >= t."""
    keep = gt != 0
    order = np.argsort(-scores[keep], kind="stable")
    pos = gt[keep][order] > 0
    if not pos.any():
        return float("nan")
    tp, fp = np.cumsum(pos), np.cumsum(~pos)
    rec, prec = tp / pos.sum(), tp / (tp + fp)
    return float(np.mean([prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]))


def voc11_map(scores: np.ndarray, gt: np.ndarray) -> float:
    """Mean over classes with a positive of :func:`voc11_ap`, percent."""
    aps = [voc11_ap(scores[:, c], gt[:, c]) for c in range(gt.shape[1])]
    return float(100.0 * np.nanmean(aps))


@METRICS.register_module(force=True)
class Accuracy(BaseMetric):
    """Top-k accuracy in percent, keys ``top1``, ``top5`` (no prefix: results.json uses these names), and with
    ``mean_per_class`` also the mean over classes of each class's top-1 (the transfer suite's fine-grained sets)."""

    default_prefix = None

    def __init__(self, topk: Sequence[int] = (1, 5), mean_per_class: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topk, self.mean_per_class = tuple(topk), bool(mean_per_class)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for s in data_samples:
            scores = s["scores"].tolist()
            self.results.append(([int(s["label"] in scores[:k]) for k in self.topk], scores[:5], int(s["label"])))

    def compute_metrics(self, results: list) -> dict[str, float]:
        hits = np.asarray([r[0] for r in results], dtype=np.float64).reshape(-1, len(self.topk))
        labels = np.asarray([r[2] for r in results], dtype=np.int64)
        save_classification([r[1] for r in results], labels.tolist(),
                            metric="mean_per_class" if self.mean_per_class else f"top{self.topk[0]}")
        out = {f"top{k}": float(100.0 * hits[:, i].mean()) for i, k in enumerate(self.topk)}
        if self.mean_per_class:
            top1 = hits[:, self.topk.index(1)]
            out["mean_per_class"] = float(100.0 * np.mean([top1[labels == c].mean() for c in np.unique(labels)]))
        return out


def save_classification(top: Sequence[Sequence[int]], labels: Sequence[int], *, metric: str = "top1",
                        ids: Sequence[Any] | None = None, split: Sequence[int] | None = None) -> None:
    """Keep the per-sample predictions (rs_transfer/eval_outputs.py, kind ``classification``): the top-5 classes
    and the label of every evaluated sample, in evaluation order (mmengine collects ranks back into dataset order,
    so the position is a stable id when none is given)."""
    from rs_transfer import eval_outputs

    if eval_outputs.destination() is None:
        return
    width = max((len(t) for t in top), default=1)
    arr = np.full((len(top), width), -1, dtype=np.int64)
    for i, t in enumerate(top):
        arr[i, :len(t)] = t
    labels_arr = np.asarray(labels, dtype=np.int64)
    small = np.int16 if max(int(arr.max(initial=0)), int(labels_arr.max(initial=0))) < 2 ** 15 else np.int32
    extra = {} if split is None else {"split": np.asarray(split, dtype=np.int8)}
    eval_outputs.save("classification", range(len(top)) if ids is None else ids, {"metric": metric},
                      top5=arr.astype(small), label=labels_arr.astype(small), **extra)


# ---- frozen-feature protocols ----------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(backbone: torch.nn.Module, loader: Any, *, mean: Sequence[float], std: Sequence[float],
                     resolution: int | None, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (float32) and labels of every sample, in loader order. Inputs are uint8 images (0-255),
    normalised here with the weight source's mean/std (0-255 units). On CUDA the forward runs in bf16 autocast with
    channels_last memory (the throughput setting; features come back as float32); on CPU in fp32. Multi-label
    targets (N x C) keep their shape."""
    cuda = torch.device(device).type == "cuda"
    backbone.eval().to(device)
    if cuda:
        backbone.to(memory_format=torch.channels_last)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    feats, labels = [], []
    for batch in loader:
        x = (batch["inputs"].to(device, non_blocking=True).float() - m) / s
        if resolution and tuple(x.shape[-2:]) != (resolution, resolution):
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            f = backbone(x)
        feats.append(f.flatten(1).float().cpu().numpy())
        labels.append(torch.as_tensor(batch["data_samples"]).numpy())
    y = np.concatenate(labels)
    return np.concatenate(feats), (y.astype(np.int64) if y.ndim == 1 else y)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices: the held-out part is the LAST ``round(fraction * n)`` of a
    ``numpy.random.default_rng(seed).permutation(n)``."""
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(fraction * n))
    return perm[: n - n_hold], perm[n - n_hold:]


CREATORS_VAL = "creators-val"   # probe.holdout / TvClassDataset(holdout=...): select on the creators' val set


def selection_split(n: int, holdout: float | str, seed: int, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) positions of a training split of ``n`` items: ``holdout`` = :data:`CREATORS_VAL`: the
    creators' validation images ``val`` (an error where the dataset has none), else a seeded random fraction
    (:func:`holdout_split`)."""
    if holdout != CREATORS_VAL:
        return holdout_split(n, float(holdout), seed)
    if not len(val):
        raise UserError(f"holdout {CREATORS_VAL!r}: this dataset's training split has no creators' validation part")
    return np.setdiff1d(np.arange(n), val), np.asarray(val, dtype=np.int64)


def l2_to_C(lam: float, n: int) -> float:
    """Kornblith et al. minimise mean cross-entropy + lam/2 ||w||^2; scikit-learn minimises
    C * sum(cross-entropy) + 1/2 ||w||^2. Dividing the latter by C*n gives lam = 1 / (C n), so C = 1 / (lam n)."""
    return 1.0 / (lam * n)


def top1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(100.0 * np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 l2_grid: Sequence[float], holdout: float = 0.2, seed: int = 0, max_iter: int = 1000,
                 score: Any = top1_score, name: str = "top1",
                 split: tuple[np.ndarray, np.ndarray] | None = None, keep_outputs: bool = True) -> dict[str, Any]:
    """Multinomial logistic regression (L-BFGS), L2 penalty chosen on a held-out split, then refit on all training
    data (Kornblith, Shlens & Le 2019). Returns ``name`` (``score(y_true, y_pred)``, percent; top-1 by default,
    mean per-class accuracy for the suite's fine-grained sets) on the test set, the chosen penalty and the sweep,
    which selects on the same score. ``split`` = (fit, held-out) indices overrides :func:`holdout_split` (few-shot
    draws hold out per class). ``keep_outputs``: save the test predictions as the run's per-sample outputs (False
    for few-shot draws, whose headline is a mean over draws, not one classifier's score)."""
    from sklearn.linear_model import LogisticRegression

    fit_idx, hold_idx = split if split is not None else holdout_split(len(train_x), holdout, seed)
    sweep = []
    for lam in l2_grid:
        clf = LogisticRegression(C=l2_to_C(lam, len(fit_idx)), solver="lbfgs", max_iter=max_iter)
        clf.fit(train_x[fit_idx], train_y[fit_idx])
        sweep.append(score(train_y[hold_idx], clf.predict(train_x[hold_idx])))
    best = int(np.argmax(sweep))  # the first maximum: grids run strongest -> weakest penalty, ties go to stronger
    lam = float(l2_grid[best])
    clf = LogisticRegression(C=l2_to_C(lam, len(train_x)), solver="lbfgs", max_iter=max_iter)
    clf.fit(train_x, train_y)
    if keep_outputs:
        # Top-5 by decision value; a stable sort puts the first maximum first, which is what ``predict`` returns.
        dec = clf.decision_function(test_x)
        dec = np.stack([-dec, dec], axis=1) if dec.ndim == 1 else dec   # two classes: one signed score
        top = clf.classes_[np.argsort(-dec, axis=1, kind="stable")[:, :5]]
        save_classification(top.tolist(), test_y.tolist(), metric=name)
    return {name: score(test_y, clf.predict(test_x)), "l2": lam, f"holdout_{name}": sweep[best],
            "sweep": dict(zip(map(float, l2_grid), sweep))}


def knn_classify(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> dict[str, float]:
    """Weighted kNN on L2-normalised features (Wu et al. 2018, as in DINO): each of the k most cosine-similar
    training samples votes for its class with weight exp(similarity / temperature). Top-1 in percent."""
    tr = torch.nn.functional.normalize(torch.from_numpy(train_x).float(), dim=1)
    te = torch.nn.functional.normalize(torch.from_numpy(test_x).float(), dim=1)
    ytr = torch.from_numpy(train_y).long()
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(tr))
    correct, top = 0, []
    for i in range(0, len(te), chunk):
        sim, idx = (te[i:i + chunk] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), n_cls).scatter_add_(1, ytr[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1).numpy() == test_y[i:i + chunk]).sum())
        # stable descending sort: the first maximum first, as argmax
        top.append(torch.sort(votes, dim=1, descending=True, stable=True).indices[:, :5].numpy())
    save_classification(np.concatenate(top).tolist(), test_y.tolist())
    return {"top1": 100.0 * (correct / len(te)), "k": float(k)}   # Accuracy's order: 100 * (hits / n)
