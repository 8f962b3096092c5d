"""Unreadable images and annotations in the dense image tasks: skipped and counted, never fatal, never hidden.

The rule (the same as video/kinetics.py for videos): a file that cannot be decoded is written to the run's skip log;
a training sample is replaced by another one (mmengine's ``BaseDataset`` re-draws a random index when
``prepare_data`` returns ``None``); an evaluation sample becomes a small placeholder that runs through the model
and that :class:`SkipCountingMetric` leaves out of the metric and counts, so that ``results.json`` states the
denominator (``eval_images``) and how many were skipped (``eval_skipped``). Too many unreadable evaluation files
(more than ``max_skipped_fraction``, or all of them) is an error: a metric over what happens to be readable is not
the benchmark number.

Evaluation samples whose files decode but whose ground truth has nothing to score (a depth map without one
measured pixel: mmseg's per-image mean would make the whole metric NaN) are left out and counted the same way
(``SkipCountingMetric._skip_no_target``), and the same limit applies.

Only decoder/format errors count as unreadable. When the pipeline raises, every file the sample reads (``img_path``,
``seg_map_path``, ``depth_map_path``) is decoded again on its own; if all of them decode, the error was not the
data's and is raised unchanged (a bug in a transform must not turn into a silently smaller data set).

Why a log file and not a counter: data-loader workers and DDP ranks are separate processes. Short ``O_APPEND``
writes are atomic on POSIX file systems; readers count unique paths per phase.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SKIP_LOG = "skipped_files.tsv"          # in the run's work_dir; one line per skip: phase, path, reason
FILE_KEYS = ("img_path", "seg_map_path", "depth_map_path")
META_KEY = "rs_unreadable"              # data-sample metainfo of an evaluation placeholder: the reason
PLACEHOLDER_HW = (64, 64)


class SkipLog:
    """Append-only ``phase<TAB>path<TAB>reason`` lines shared by every worker and rank of one run."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None

    def add(self, phase: str, file: str, reason: str) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = f"{phase}\t{file}\t{' '.join(reason.split())[:300]}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def files(self, phase: str | None = None) -> list[str]:
        """Unique skipped paths (of one phase, or all)."""
        if self.path is None or not self.path.is_file():
            return []
        rows = [ln.split("\t") for ln in self.path.read_text().splitlines() if ln.count("\t") >= 2]
        return sorted({r[1] for r in rows if phase is None or r[0] == phase})


def summary(work_dir: str | os.PathLike) -> dict[str, Any]:
    """What ``results.json`` records under ``skipped_files``: unique unreadable files per phase and a few names."""
    log = SkipLog(Path(work_dir) / SKIP_LOG)
    train, evaluation = log.files("train"), log.files("eval")
    return {"train": len(train), "eval": len(evaluation), "log": str(log.path) if log.path.is_file() else None,
            "examples": sorted(set(train + evaluation))[:10]}


def read_problem(path: str | os.PathLike) -> tuple[bytes | None, str | None]:
    """``(bytes, None)``, or ``(None, why)`` when ``path`` cannot be read or is empty (shared with ``data check
    --deep``, so both name a bad file the same way)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return None, f"cannot read ({err.strerror or type(err).__name__})"
    return (data, None) if data else (None, "empty file")


def cv2_problem(data: bytes) -> str | None:
    """Why OpenCV's ``imdecode`` (any depth: the decoder the loading transforms use) gives no image, or None."""
    import cv2
    import numpy as np

    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        return f"cannot decode ({str(err).strip().splitlines()[-1]})"
    if img is None or img.size == 0:
        return "cannot decode (not an image OpenCV reads, or truncated)"
    return None


def unreadable(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be decoded the way the loading transforms decode it (cv2, any depth; an SBD ``.mat``
    mask as ``tasks/_sbd.py`` reads it), or None."""
    if str(path).endswith(".mat"):
        from ._sbd import mat_problem

        return mat_problem(path)
    data, problem = read_problem(path)
    return problem if data is None else cv2_problem(data)


def first_unreadable(info: dict) -> tuple[str, str] | None:
    """(path, reason) of the first file of a sample that does not decode, or None when they all do."""
    for key in FILE_KEYS:
        path = info.get(key)
        if path:
            reason = unreadable(path)
            if reason:
                return str(path), reason
    return None


class SkipUnreadableMixin:
    """For mmengine ``BaseDataset`` subclasses (mmseg/mmdet datasets): unreadable samples are skipped and logged.

    ``skip_log``: path of the run's log (``Task.configure`` sets ``<work_dir>/skipped_files.tsv``); ``None`` logs
    nothing (the behaviour is the same). A data info may carry ``META_KEY`` already (an annotation that failed to
    parse when the data list was built, e.g. a broken VOC XML), then its files are not even read.
    """

    skip_log: SkipLog

    def _init_skip_log(self, skip_log: str | None) -> None:
        self.skip_log = SkipLog(skip_log)

    @property
    def phase(self) -> str:
        return "eval" if self.test_mode else "train"  # type: ignore[attr-defined]

    def __getitem__(self, idx: int) -> Any:
        try:
            return super().__getitem__(idx)  # type: ignore[misc]
        except Exception as err:
            # mmengine gives up after max_refetch re-draws with a generic Exception: say what it means here.
            if self.test_mode or not str(err).startswith("Cannot find valid image"):  # type: ignore[attr-defined]
                raise
            from rs_transfer.errors import UserError

            where = f"; the skipped files are listed in {self.skip_log.path}" if self.skip_log.path else ""
            tries = self.max_refetch + 1  # type: ignore[attr-defined]
            raise UserError(f"{tries} training samples in a row were unreadable or rejected by the pipeline"
                            f"{where}") from None

    def prepare_data(self, idx: int) -> Any:
        info = self.get_data_info(idx)  # type: ignore[attr-defined]
        bad = (info.get("xml_path") or info.get("img_path"), info[META_KEY]) if info.get(META_KEY) else None
        if bad is None:
            try:
                return self.pipeline(info)  # type: ignore[attr-defined]
            except Exception:
                bad = first_unreadable(self.get_data_info(idx))  # type: ignore[attr-defined]
                if bad is None:
                    raise               # the files decode: the error is not the data's
        self.skip_log.add(self.phase, *bad)
        if not self.test_mode:  # type: ignore[attr-defined]
            return None                 # BaseDataset draws another index
        return self._placeholder(idx, bad[1])

    def _placeholder(self, idx: int, reason: str) -> Any:
        """An evaluation sample with a blank image and no ground truth, flagged for the metric: the pipeline's own
        non-loading transforms run on it, so it batches like any other sample."""
        import numpy as np

        results = self.get_data_info(idx)  # type: ignore[attr-defined]
        for key in ("instances", "seg_fields"):
            if key in results:
                results[key] = []
        h, w = PLACEHOLDER_HW
        results.update(img=np.zeros((h, w, 3), np.uint8), img_shape=(h, w), ori_shape=(h, w), height=h, width=w)
        for t in self.pipeline.transforms:  # type: ignore[attr-defined]
            if not type(t).__name__.startswith("Load"):
                results = t(results)
        results["data_samples"].set_metainfo({META_KEY: reason})
        return results


class SkipCountingMetric:
    """Mixin for mmengine metrics: evaluation placeholders are left out and counted.

    Adds ``eval_images`` (samples the metric used) and ``eval_skipped`` (unreadable ones left out); more than
    ``max_skipped_fraction`` unreadable samples, or all of them, raises ``UserError``. ``report_counts=False`` (a
    second metric over the same loader, whose keys would clash) only leaves the placeholders out.
    """

    def _init_counts(self, max_skipped_fraction: float, report_counts: bool) -> None:
        if not 0.0 <= max_skipped_fraction < 1.0:
            raise ValueError(f"max_skipped_fraction must be in [0, 1), got {max_skipped_fraction}")
        self.max_skipped_fraction, self.report_counts = float(max_skipped_fraction), report_counts

    def _split(self, data_samples: Any) -> list:
        """The samples to score; one ``_Skipped`` marker per placeholder goes into ``self.results``."""
        keep = []
        for sample in data_samples:
            reason = sample.get(META_KEY)
            if reason is None:
                keep.append(sample)
            else:
                self.results.append(_Skipped(str(sample.get("img_path", "?")), str(reason)))  # type: ignore
        return keep

    def _skip_no_target(self, path: str, reason: str) -> None:
        """Leave out a readable sample whose ground truth has nothing to score (e.g. a depth map without a single
        measured pixel): counted like an unreadable one, never averaged in as NaN or 0."""
        self.results.append(_Skipped(path, reason, NO_TARGET))  # type: ignore[attr-defined]

    def _counted(self, results: list) -> tuple[list, dict[str, float]]:
        from rs_transfer.errors import UserError

        skipped = [r for r in results if isinstance(r, _Skipped)]
        kept = [r for r in results if not isinstance(r, _Skipped)]
        total = len(kept) + len(skipped)
        if not self.report_counts:      # a second metric on the same loader: the first one checks and reports
            return kept, {}
        if skipped and (not kept or len(skipped) > self.max_skipped_fraction * total):
            example = f"{skipped[0].path} ({skipped[0].reason})"
            kinds = {r.kind for r in skipped}
            what = " or ".join(k for k in (UNREADABLE_KIND, NO_TARGET) if k in kinds)
            fix = " or ".join(f for k, f in ((UNREADABLE_KIND, "re-extract those files"),
                                             (NO_TARGET, "fix their ground truth (`rs-transfer data check --deep` "
                                                         "lists them)")) if k in kinds)
            raise UserError(f"{len(skipped)} of {total} evaluation images {what} (allowed: "
                            f"{self.max_skipped_fraction:.1%}), e.g. {example}; no metric is reported over the "
                            f"rest. {fix[0].upper() + fix[1:]}, or raise the evaluator's max_skipped_fraction.")
        return kept, {"eval_images": float(len(kept)), "eval_skipped": float(len(skipped))}


UNREADABLE_KIND = "are unreadable"
NO_TARGET = "have no valid ground truth"


class _Skipped:
    """A left-out evaluation sample (picklable: DDP collects metric results across ranks). ``kind``: unreadable
    file, or no valid ground truth (:meth:`SkipCountingMetric._skip_no_target`)."""

    def __init__(self, path: str, reason: str, kind: str = UNREADABLE_KIND) -> None:
        self.path, self.reason, self.kind = path, reason, kind
