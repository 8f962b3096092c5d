"""What the additive-study and grid reports (Table 1, Table 5, the scaling study) share: the deltas of each row
against the previous one (ours and the paper's), number cells, and writing the report files.

Each report is written as ``OUT.md``, ``OUT.csv``, ``OUT.json`` (and ``OUT.png`` where the study plots), every file
replaced atomically (the study then adds ``OUT.html``: :func:`rs_transfer.studies.htmlpage.write_rows_html`), so an interrupted study never leaves a half-written table.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_deltas(rows: list[dict[str, Any]]) -> None:
    """``delta`` (our top-1 minus the previous row's) and ``paper_delta`` (the same for the paper's figures), in
    place; ``None`` for the first row and wherever either side has no figure."""
    for prev, row in zip([None] + rows[:-1], rows):
        row["delta"] = None if prev is None else round(row["top1"] - prev["top1"], 2)
        p_prev = None if prev is None else prev.get("paper_top1")
        row["paper_delta"] = (None if p_prev is None or row.get("paper_top1") is None
                              else round(row["paper_top1"] - p_prev, 2))


def fmt(v: float | None, signed: bool = False) -> str:
    """A percentage cell: one decimal, ``+``/``-`` for deltas, ``-`` when there is no figure."""
    if v is None:
        return "-"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def count(v: float | None) -> str:
    """A count cell (videos, files): an integer, ``-`` when not recorded."""
    return "-" if v is None else str(int(v))


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_report_files(out: str | Path, *, markdown: str, csv_text: str, data: Any,
                       png: bytes | None = None) -> dict[str, Path]:
    """THE way a study writes its report: ``OUT.md``, ``OUT.csv``, ``OUT.json`` and optionally ``OUT.png``
    (``out`` without suffix), each replaced atomically."""
    from rs_transfer.atomic import write_bytes_atomic, write_json_atomic

    out = Path(out)
    paths = {"md": write_bytes_atomic(out.with_suffix(".md"), markdown.encode()),
             "csv": write_bytes_atomic(out.with_suffix(".csv"), csv_text.encode()),
             "json": write_json_atomic(out.with_suffix(".json"), data)}
    if png is not None:
        paths["png"] = write_bytes_atomic(out.with_suffix(".png"), png)
    return paths


def write_files(out: str | Path, report: dict[str, Any], *, markdown: str, columns: Sequence[str],
                png: bytes | None = None) -> list[Path]:
    """A row-table report (Tables 1 and 5, scaling): CSV of ``columns`` of ``report["rows"]``."""
    return list(write_report_files(out, markdown=markdown, csv_text=to_csv(report["rows"], columns), data=report,
                                   png=png).values())
