"""The dense tasks' dataset and metric classes: mmdet/mmseg's own, plus skipping and counting unreadable files.

Each class is the reference implementation's (mmdet ``VOCDataset``, mmseg ``PascalVOCDataset``,
``ADE20KDataset``, ``NYUDataset``, ``IoUMetric``) with :mod:`rs_transfer.tasks._corrupt` mixed in, so the numbers
are computed exactly as there; the only difference is what happens to a file that does not decode. The NYU dataset
also reads BTS's ``sync/`` + ``official_splits/test`` folders (see :class:`NYUDepthDataset`).
"""
from __future__ import annotations

import os.path as osp
from pathlib import Path
from typing import Any

from mmdet.datasets import VOCDataset
from mmseg.datasets import ADE20KDataset, NYUDataset, PascalVOCDataset
from mmseg.evaluation import IoUMetric

from ._corrupt import META_KEY, SkipCountingMetric, SkipUnreadableMixin
from .nyu_depth import bts_pairs, scene_type


class VOCDetDataset(SkipUnreadableMixin, VOCDataset):
    """mmdet's ``VOCDataset``; an annotation XML that does not parse is logged and its image skipped (training:
    dropped from the list; evaluation: a counted placeholder)."""

    def __init__(self, *args: Any, skip_log: str | None = None, **kwargs: Any) -> None:
        self._init_skip_log(skip_log)
        super().__init__(*args, **kwargs)

    def parse_data_info(self, img_info: dict) -> dict:
        try:
            return super().parse_data_info(img_info)
        except Exception:
            from . import _voc

            problem = _voc.check_annotation(Path(img_info["xml_path"]))
            if problem is None:
                raise                   # the XML is fine: not the data's error
            self.skip_log.add(self.phase, img_info["xml_path"], problem)
            return {"img_path": osp.join(self.sub_data_root, img_info["file_name"]), "img_id": img_info["img_id"],
                    "xml_path": img_info["xml_path"], "height": 0, "width": 0, "instances": [], META_KEY: problem}


class VOCSegDataset(SkipUnreadableMixin, PascalVOCDataset):
    """mmseg's ``PascalVOCDataset`` (split file + JPEGImages + masks), unreadable files skipped and counted."""

    def __init__(self, *args: Any, skip_log: str | None = None, **kwargs: Any) -> None:
        self._init_skip_log(skip_log)
        super().__init__(*args, **kwargs)


class ADE20KSegDataset(SkipUnreadableMixin, ADE20KDataset):
    """mmseg's ``ADE20KDataset``, unreadable files skipped and counted."""

    def __init__(self, *args: Any, skip_log: str | None = None, **kwargs: Any) -> None:
        self._init_skip_log(skip_log)
        super().__init__(*args, **kwargs)


class NYUDepthDataset(SkipUnreadableMixin, NYUDataset):
    """mmseg's ``NYUDataset`` in one of two on-disk layouts.

    ``layout="mmseg"``: ``data_prefix.img_path`` holds ``<scene>_<n>.jpg`` and ``depth_map_path`` the
    ``<scene>_<n>.png`` of the same stem (mmseg's converter output; mmseg's own loader is used unchanged).
    ``layout="bts"``: BTS's folders, ``<scene folder>/rgb_<n>.jpg`` next to ``<scene folder>/sync_depth_<n>.png``
    (``sync/`` for training, ``official_splits/test/`` for the Eigen test frames); ``file_list`` optionally names a
    BTS file list (``rgb path, depth path, focal`` per line, paths relative to the folder) to read instead of
    every pair found. Scene categories come from the scene folder (``kitchen_0028b`` -> ``kitchen``).
    """

    def __init__(self, *args: Any, layout: str = "mmseg", file_list: str | None = None,
                 skip_log: str | None = None, **kwargs: Any) -> None:
        if layout not in ("mmseg", "bts"):
            raise ValueError(f"layout must be 'mmseg' or 'bts', got {layout!r}")
        self.layout, self.file_list = layout, file_list
        self._init_skip_log(skip_log)
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        if self.layout == "mmseg":
            return super().load_data_list()
        root = Path(self.data_prefix["img_path"])
        pairs = bts_pairs(root, Path(self.file_list) if self.file_list else None)
        classes = self._metainfo["classes"]
        out = []
        for img, depth in pairs:
            scene = scene_type(img.parent.name)
            out.append({"img_path": str(img), "depth_map_path": str(depth), "seg_fields": [],
                        "category_id": classes.index(scene) if scene in classes else -1})
        return out


class CountedIoUMetric(SkipCountingMetric, IoUMetric):
    """mmseg's ``IoUMetric`` (mIoU in percent, mmseg's rounding) plus ``eval_images`` / ``eval_skipped``."""

    def __init__(self, *args: Any, max_skipped_fraction: float = 0.01, report_counts: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_counts(max_skipped_fraction, report_counts)

    def process(self, data_batch: Any, data_samples: Any) -> None:
        kept = self._split(data_samples)
        super().process(data_batch, kept)
        if not self.format_only:   # each image's 4 areas get its sample id (mmengine gathers results, not extras)
            n = len(kept)
            for j, sample in enumerate(kept):
                i = len(self.results) - n + j
                self.results[i] = (*self.results[i], sample_id(sample.get("img_path", f"#{i}")))

    def compute_metrics(self, results: list) -> dict[str, float]:
        kept, counts = self._counted(results)
        ids = [r[4] for r in kept]
        kept = [r[:4] for r in kept]
        metrics = super().compute_metrics(kept)
        if kept:
            import numpy as np

            from rs_transfer import eval_outputs

            eval_outputs.save("segmentation", ids, {"metric": "mIoU", "rounding": 2},
                              intersect=np.stack([r[0].cpu().numpy() for r in kept]).round().astype(np.int64),
                              union=np.stack([r[1].cpu().numpy() for r in kept]).round().astype(np.int64))
        return {**metrics, **counts}


def sample_id(path: str) -> str:
    """A stable sample id from a file path: its parent folder and stem (``JPEGImages/2007_000033``); the data root
    differs between machines, the stem alone may repeat across folders (NYU scenes)."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
