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
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.evaluation import IoUMetric

from ._corrupt import META_KEY, SkipCountingMetric, SkipUnreadableMixin
from ._labels import add_label_check
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
    """mmseg's ``PascalVOCDataset`` (split file + JPEGImages + masks), unreadable files skipped and counted, mask
    values outside the 21 classes an error naming the file (``tasks/_labels.py``)."""

    def __init__(self, *args: Any, skip_log: str | None = None, **kwargs: Any) -> None:
        self._init_skip_log(skip_log)
        super().__init__(*args, **kwargs)
        add_label_check(self, "voc-seg")


class SBDAugDataset(VOCSegDataset):
    """The SBD-only training images of VOC2012 trainaug, read from the SBD release as downloaded (``tasks/_sbd.py``):
    mmseg's voc_aug.py ``aug`` set (SBD train + val minus VOC2012 train + val), images from ``JPEGImages`` under
    ``data_root`` (VOC2012), masks from ``<sbd_root>/dataset/cls/<id>.mat``. Pair with
    :class:`LoadSBDAnnotations` in the pipeline. ``ann_file`` is SBD's ``train.txt`` (one of the lists the rule
    reads; mmseg's dataset wants a file)."""

    def __init__(self, *args: Any, sbd_root: str, **kwargs: Any) -> None:
        from . import _sbd

        self.sbd_root = Path(sbd_root)
        kwargs.setdefault("ann_file", str(self.sbd_root / "dataset" / "train.txt"))
        masks = _sbd.mask_path(self.sbd_root, "x").parent
        kwargs["data_prefix"] = dict(img_path="JPEGImages", seg_map_path=str(masks))
        super().__init__(*args, seg_map_suffix=".mat", **kwargs)

    def load_data_list(self) -> list[dict]:
        from . import _sbd

        img_dir, ann_dir = self.data_prefix["img_path"], self.data_prefix["seg_map_path"]
        return [dict(img_path=osp.join(img_dir, i + self.img_suffix), seg_map_path=osp.join(ann_dir, i + ".mat"),
                     label_map=self.label_map, reduce_zero_label=self.reduce_zero_label, seg_fields=[])
                for i in _sbd.aug_ids(Path(self.data_root), self.sbd_root)]


class LoadSBDAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` that also reads SBD ``.mat`` masks (``GTcls.Segmentation``, as voc_aug.py
    converts them); PNG masks load exactly as in mmseg."""

    def _load_seg_map(self, results: dict) -> None:
        if not str(results["seg_map_path"]).endswith(".mat"):
            return super()._load_seg_map(results)
        from . import _sbd

        if results.get("reduce_zero_label"):
            raise ValueError("SBD masks use 0 for background: reduce_zero_label does not apply")
        seg = _sbd.read_mask(results["seg_map_path"])
        if results.get("label_map") is not None:       # mmseg's custom-class remapping, as for PNG masks
            src = seg.copy()
            for old_id, new_id in results["label_map"].items():
                seg[src == old_id] = new_id
        results["gt_seg_map"] = seg
        results["seg_fields"].append("gt_seg_map")
        return None


class ADE20KSegDataset(SkipUnreadableMixin, ADE20KDataset):
    """mmseg's ``ADE20KDataset``, unreadable files skipped and counted, mask values outside the 150 classes an error
    naming the file (``tasks/_labels.py``)."""

    def __init__(self, *args: Any, skip_log: str | None = None, **kwargs: Any) -> None:
        self._init_skip_log(skip_log)
        super().__init__(*args, **kwargs)
        add_label_check(self, "ade20k")


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
    """mmseg's ``IoUMetric`` (mIoU in percent, mmseg's rounding) plus ``eval_images`` / ``eval_skipped``.

    Masks without a single scored pixel in the whole evaluation are an error (mmseg reported mIoU 0.0: IoU 0 for
    every predicted class, aAcc NaN). A class that never occurs in any evaluation mask is a warning
    (``warn_absent_classes``; off for the mini sets, which use a few classes on purpose): its IoU is 0 wherever the
    model predicts it, which is what VOC masks whose background was relabelled to 255 look like.
    """

    def __init__(self, *args: Any, max_skipped_fraction: float = 0.01, report_counts: bool = True,
                 warn_absent_classes: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_counts(max_skipped_fraction, report_counts)
        self.warn_absent_classes = warn_absent_classes
        self._example, self._reduce_zero = "?", False

    def process(self, data_batch: Any, data_samples: Any) -> None:
        kept = self._split(data_samples)
        if kept and self._example == "?":
            self._example = str(kept[0].get("seg_map_path") or kept[0].get("img_path", "?"))
            self._reduce_zero = bool(kept[0].get("reduce_zero_label", False))
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
        if self.report_counts and kept:
            self._check_labels(kept)
        metrics = super().compute_metrics(kept)
        if kept:
            import numpy as np

            from rs_transfer import eval_outputs

            eval_outputs.save("segmentation", ids, {"metric": "mIoU", "rounding": 2},
                              intersect=np.stack([r[0].cpu().numpy() for r in kept]).round().astype(np.int64),
                              union=np.stack([r[1].cpu().numpy() for r in kept]).round().astype(np.int64))
        return {**metrics, **counts}

    def _check_labels(self, kept: list) -> None:
        """Per-class ground-truth pixel totals (mmseg's 4th result entry) must not be all zero."""
        import warnings

        from rs_transfer.errors import UserError

        classes = list(self.dataset_meta["classes"])  # type: ignore[index]
        area = sum(r[3] for r in kept)
        n = len(classes)
        valid = (f"valid: 1..{n}; 0 and {self.ignore_index} = ignore" if self._reduce_zero else
                 f"valid: 0..{n - 1}; {self.ignore_index} = ignore")
        if float(area.sum()) == 0:
            raise UserError(f"no valid ground-truth pixel in the {len(kept)} evaluation masks (e.g. "
                            f"{self._example}): every label is ignored ({valid}), so there is no mIoU to report; "
                            "the masks were not prepared for this task (check them with `rs-transfer data check "
                            "--deep`)")
        absent = [c for c, a in zip(classes, area.tolist()) if a == 0]
        if absent and self.warn_absent_classes:
            shown = ", ".join(absent[:10]) + (f" (and {len(absent) - 10} more)" if len(absent) > 10 else "")
            warnings.warn(f"{len(absent)} of {n} classes never occur in the {len(kept)} evaluation masks (e.g. "
                          f"{self._example}): {shown}; mIoU counts their IoU as 0 wherever the model predicts them "
                          f"and aAcc leaves them out. Relabelled masks ({valid})?", UserWarning, stacklevel=2)


def sample_id(path: str) -> str:
    """A stable sample id from a file path: its parent folder and stem (``JPEGImages/2007_000033``); the data root
    differs between machines, the stem alone may repeat across folders (NYU scenes)."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
