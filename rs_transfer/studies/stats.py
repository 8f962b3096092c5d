"""Intervals and paired significance for a report's table (rows = weight sources, columns = tasks).

Why a separate module: :mod:`rs_transfer.studies.report` gathers results.json files and renders; this one turns the
runs' kept per-sample outputs (``eval_outputs.npz``) into what a reader needs to judge a difference: every cell's 95 %
interval (one seed: bootstrap over test samples; several seeds: seeds, then samples), and for every row against
the baseline row the paired difference on the same test samples, its interval, a permutation p-value and the
Benjamini-Hochberg adjusted p-value over the whole table (rs_transfer/studies/intervals.py).

Protecting the reader (:func:`diff_text`): a difference is printed with its interval, always; it is bold only when
significant after the correction AND larger than its interval's half-width. A run made before outputs were kept
gets ``NO_OUTPUTS``, never a zero-width interval.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NO_OUTPUTS = "no interval (run before outputs were kept)"
TEST = "paired permutation test (each test sample's two outputs swapped), two-sided"
CORRECTION = "Benjamini-Hochberg (scipy.stats.false_discovery_control) over every difference in the table"
MINI_WARNING = ("MINI preset: intervals and p-values from a few generated test images mean nothing; they only show "
                "that the machinery runs.")


@dataclass
class CellStat:
    """A cell's interval (``None`` with ``note`` when it cannot have one)."""

    interval: Any = None              # rs_transfer.intervals.Interval
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        iv = self.interval
        return {"low": iv.low, "high": iv.high, "interval_method": iv.method} if iv else {"interval_note": self.note}


@dataclass
class DiffStat:
    """A row's paired difference to the baseline for one task."""

    comparison: Any = None            # rs_transfer.intervals.Comparison
    p_adjusted: float | None = None
    significant: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        if c is None:
            return {"diff_note": self.note}
        d = c.difference
        return {"diff": d.value, "diff_low": d.low, "diff_high": d.high, "diff_method": d.method,
                "p_value": c.p_value, "p_adjusted": self.p_adjusted, "significant": self.significant}


@dataclass
class TableStats:
    alpha: float
    resamples: int
    cells: dict[tuple[str, str], CellStat] = field(default_factory=dict)
    diffs: dict[tuple[str, str], DiffStat] = field(default_factory=dict)
    mini: bool = False

    def legend(self, baseline: str | None) -> list[str]:
        """What the numbers mean, in the words the report prints."""
        lines = ["Cells: value [95 % interval]. Interval = bootstrap over the test samples recomputing the task's "
                 f"metric ({self.resamples} resamples, BCa where defined); with several seeds, seeds are resampled "
                 "first, then samples (percentile). A run made before per-sample outputs were kept shows "
                 f"\"{NO_OUTPUTS}\"."]
        if baseline:
            lines.append(f"Differences vs {baseline}: same resampled test samples for both rows; p from a {TEST}; "
                         f"adjusted p by {CORRECTION}; ** = adjusted p < {self.alpha:g} and the difference exceeds "
                         "its interval's half-width. A difference is never shown without its interval.")
        if self.mini:
            lines.append(MINI_WARNING)
        return lines


def _outputs(dirs: list[str]) -> list[Any] | None:
    from rs_transfer import eval_outputs

    found = [eval_outputs.find(d) for d in dirs]
    if not found or any(f is None for f in found):
        return None
    return [eval_outputs.load(f) for f in found]


def table_stats(rep: Any, *, alpha: float = 0.05, resamples: int | None = None, seed: int = 0) -> TableStats:
    """Intervals for every cell of ``rep`` (a :class:`rs_transfer.studies.report.Report`) and paired differences to its
    baseline row, with BH-adjusted p-values across the table."""
    from rs_transfer.studies import intervals

    if not 0 < alpha < 1:
        from rs_transfer.errors import UserError

        raise UserError(f"--alpha must be between 0 and 1, got {alpha}")
    resamples = resamples or intervals.RESAMPLES
    stats = TableStats(alpha, resamples, mini=any(r.endswith("[mini]") for r in rep.rows))
    loaded: dict[tuple[str, str], tuple[list[int], list[Any]] | None] = {}
    for row, cells in rep.rows.items():
        for task, cell in cells.items():
            outs = _outputs(list(cell.dirs))
            loaded[(row, task)] = None if outs is None else (list(cell.seeds), outs)
            if outs is None:
                stats.cells[(row, task)] = CellStat(note=NO_OUTPUTS)
                continue
            key = rep.metrics.get(task)
            try:
                scorers = [intervals.scorer(o, key) for o in outs]
                iv = (intervals.interval(scorers[0], resamples=resamples, seed=seed) if len(scorers) == 1 else
                      intervals.seeds_interval(scorers, resamples=resamples, seed=seed))
                stats.cells[(row, task)] = CellStat(iv)
            except ValueError as err:       # e.g. seeds evaluated on different test samples
                stats.cells[(row, task)] = CellStat(note=f"no interval ({err})")
    base = rep.baseline if rep.baseline in rep.rows else None
    if base is None:
        return stats
    for row in rep.rows:
        if row == base:
            continue
        for task in rep.tasks:
            a, b = loaded.get((row, task)), loaded.get((base, task))
            if a is None or b is None:
                if (row, task) in loaded or (base, task) in loaded:
                    stats.diffs[(row, task)] = DiffStat(note=NO_OUTPUTS if task in rep.rows[row] and
                                                        task in rep.rows[base] else "")
                continue
            common = sorted(set(a[0]) & set(b[0]))
            if not common:
                stats.diffs[(row, task)] = DiffStat(note="no seed in common with the baseline")
                continue
            pa = [a[1][a[0].index(s)] for s in common]
            pb = [b[1][b[0].index(s)] for s in common]
            try:
                stats.diffs[(row, task)] = DiffStat(intervals.paired(pa, pb, rep.metrics.get(task),
                                                                     resamples=resamples, seed=seed))
            except ValueError as err:
                stats.diffs[(row, task)] = DiffStat(note=f"not compared ({err})")
    tested = [(k, d) for k, d in stats.diffs.items() if d.comparison is not None]
    adjusted = intervals.adjust([d.comparison.p_value for _, d in tested])
    for (_, d), p in zip(tested, adjusted):
        d.p_adjusted = p
        diff = d.comparison.difference
        d.significant = p < alpha and abs(diff.value) > diff.half_width
    return stats


def cell_text(stat: CellStat | None, value: float, n: int) -> str:
    """``76.12 [75.30, 77.01]`` (+ ``(2 seeds)``), or the value with the reason it has no interval."""
    seeds = f" ({n} seeds)" if n > 1 else ""
    if stat is None or stat.interval is None:
        return f"{value:.2f}{seeds}, {stat.note if stat else NO_OUTPUTS}"
    iv = stat.interval
    return f"{value:.2f} [{iv.low:.2f}, {iv.high:.2f}]{seeds}"


def diff_text(stat: DiffStat | None) -> str | None:
    """A difference with its interval and p-values; bold only when significant (see module docstring)."""
    if stat is None:
        return None
    if stat.comparison is None:
        return stat.note or None
    d = stat.comparison.difference
    text = f"{d.value:+.2f} [{d.low:+.2f}, {d.high:+.2f}] p={stat.comparison.p_value:.3g}, adj {stat.p_adjusted:.3g}"
    return f"**{text}**" if stat.significant else text
