"""Top-1/top-5 over the videos that decoded, every denominator beside it, and the guard that refuses a number
computed on too few readable videos."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric

from rs_transfer.tasks.classification import save_classification
from rs_transfer.tasks._corrupt import SkipLog

DEFAULT_MAX_UNREADABLE = 0.05   # chosen: real Kinetics-400 val copies lose ~0.5-2% of videos; 5% means a broken copy


def check_unreadable(corrupt: int, total: int, max_unreadable: float, where: str = "evaluation") -> None:
    """Raise a one-line ``UserError`` when every video, or more than ``max_unreadable`` of them, is unreadable:
    a top-1 over what is left would not be the benchmark's number."""
    from rs_transfer.errors import UserError

    if total <= 0 or corrupt >= total or corrupt > max_unreadable * total:
        raise UserError(f"{where}: {corrupt} of {total} Kinetics videos are unreadable (limit "
                        f"{max_unreadable:.1%}), so no top-1 is reported; `rs-transfer data check --task kinetics400` "
                        "lists them (re-download), or raise val_evaluator.max_unreadable")


class VideoAccuracy(BaseMetric):
    """Percent top-1 / top-5 (Table 5 reports percent) over the readable videos, with the denominators:
    ``eval_videos`` (scored), ``eval_corrupt`` (unreadable: found by ``data check`` + failed while decoding),
    ``eval_missing`` (csv rows without a file), ``eval_skipped`` (failed while decoding this run) and
    ``skipped_videos`` (unique files in the run's skip log: training and evaluation together).

    ``known_corrupt`` / ``missing`` are filled in by the task from ``data check``. More than ``max_unreadable``
    (a fraction of the present videos) unreadable, or none readable, stops the run with a one-line error on every
    rank before any metric is written.
    """

    default_prefix = None

    def __init__(self, topk: Sequence[int] = (1, 5), skip_log: str | None = None, known_corrupt: int = 0,
                 missing: int = 0, max_unreadable: float = DEFAULT_MAX_UNREADABLE, **kwargs) -> None:
        super().__init__(**kwargs)
        self.topk, self.skip_log = tuple(topk), SkipLog(skip_log)
        self.known_corrupt, self.missing, self.max_unreadable = int(known_corrupt), int(missing), max_unreadable

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for d in data_samples:
            if not d["valid"]:
                self.results.append({"valid": False})
                continue
            score = torch.as_tensor(d["pred_score"])
            k = min(max(self.topk), score.numel())
            rank = score.topk(k).indices.tolist()
            self.results.append({"valid": True, "hits": {t: d["label"] in rank[:t] for t in self.topk},
                                 "top5": rank[:5], "label": int(d["label"])})

    def evaluate(self, size: int) -> dict:
        # The guard runs on every rank (counts all-reduced) so that DDP ranks stop together; mmengine computes the
        # metric on rank 0 only, where raising would leave the other ranks waiting for its broadcast.
        from mmengine.dist import all_reduce

        counts = torch.tensor([sum(r["valid"] for r in self.results), sum(not r["valid"] for r in self.results)],
                              dtype=torch.float64)
        all_reduce(counts)
        valid, skipped = int(counts[0]), int(counts[1])
        corrupt = skipped + self.known_corrupt
        check_unreadable(corrupt, valid + corrupt, self.max_unreadable)
        return super().evaluate(size)

    def compute_metrics(self, results: list) -> dict[str, float]:
        valid = [r for r in results if r["valid"]]
        skipped = len(results) - len(valid)
        # 100 * (hits / n): Accuracy's order of operations, so the kept outputs reproduce it bit for bit
        out = {f"top{t}": 100.0 * (sum(r["hits"][t] for r in valid) / len(valid)) for t in self.topk}
        out["eval_videos"] = float(len(valid))
        out["eval_corrupt"] = float(skipped + self.known_corrupt)
        out["eval_missing"] = float(self.missing)
        out["eval_skipped"] = float(skipped)
        out["skipped_videos"] = float(len(self.skip_log.files()))
        # per-video outputs after the multi-view average: id = position in the (fixed) evaluation order
        keep = [(i, r) for i, r in enumerate(results) if r["valid"]]
        save_classification([r["top5"] for _, r in keep], [r["label"] for _, r in keep], ids=[i for i, _ in keep],
                            metric=f"top{self.topk[0]}")
        return out
