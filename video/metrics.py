"""Top-1/top-5 over the videos that decoded, plus how many were skipped, for results.json."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric

from .kinetics import SkipLog


class VideoAccuracy(BaseMetric):
    """Percent top-1 / top-5 (Table 5 reports percent), ``eval_skipped`` (invalid test samples left out) and
    ``skipped_videos`` (unique files in the run's skip log so far: training and evaluation together)."""

    default_prefix = None

    def __init__(self, topk: Sequence[int] = (1, 5), skip_log: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.topk, self.skip_log = tuple(topk), SkipLog(skip_log)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for d in data_samples:
            if not d["valid"]:
                self.results.append({"valid": False})
                continue
            score = torch.as_tensor(d["pred_score"])
            k = min(max(self.topk), score.numel())
            rank = score.topk(k).indices.tolist()
            self.results.append({"valid": True, "hits": {t: d["label"] in rank[:t] for t in self.topk}})

    def compute_metrics(self, results: list) -> dict[str, float]:
        valid = [r for r in results if r["valid"]]
        out = {f"top{t}": 100.0 * sum(r["hits"][t] for r in valid) / max(len(valid), 1) for t in self.topk}
        out["eval_videos"] = float(len(valid))
        out["eval_skipped"] = float(len(results) - len(valid))
        out["skipped_videos"] = float(len(self.skip_log.skipped()))
        return out
