"""Several seeds per row for the row-by-row studies (table1, table5, scaling): where each seed runs, and a row's
mean with its 95 % interval and the paired step to the previous row.

Why: the paper's Table 1 averages 2 runs per row, and one run says nothing about run-to-run spread. Each seed is its
own run (its own folder, so a cluster executor can run seeds in parallel, and reuse by config hash works per seed:
the seed is part of the configuration). The first seed keeps the row's folder (``WORK_DIR/<row>``), so single-seed
studies and their finished runs stay where they were; seed ``s`` after it runs in ``WORK_DIR/<row>-seed<s>``.

Intervals come from the runs' kept per-sample outputs (rs_transfer/studies/intervals.py): seeds are resampled, then the
test samples. A row whose runs kept no outputs gets ``interval_note`` instead, never a zero-width interval.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rs_transfer.studies.stats import NO_OUTPUTS


def seeds_of(seed: int, seeds: int) -> list[int]:
    """The seeds of a row: ``seed``, ``seed + 1``, ... (``seeds`` of them)."""
    from rs_transfer.errors import UserError

    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    return list(range(seed, seed + seeds))


def seed_dir(row_dir: Path, seed: int, first: int) -> Path:
    """The run folder of one seed of a row (the first seed keeps the row's own folder)."""
    return row_dir if seed == first else row_dir.with_name(f"{row_dir.name}-seed{seed}")


def _outputs(results: Sequence[dict[str, Any]]) -> list[Any] | None:
    from rs_transfer import eval_outputs

    found = [eval_outputs.find(r.get("work_dir", "")) if r.get("work_dir") else None for r in results]
    return None if not found or any(f is None for f in found) else [eval_outputs.load(f) for f in found]


def combine(results: Sequence[dict[str, Any]], keys: Sequence[str], headline: str = "top1", *,
            resamples: int | None = None) -> dict[str, Any]:
    """A row's numbers over its seeds: each key's mean (None when a run lacks it), ``seeds``, the headline's
    per-seed ``<key>_values`` and its interval ``<key>_low`` / ``<key>_high`` (or ``interval_note``)."""
    from rs_transfer.studies import intervals

    out: dict[str, Any] = {"seeds": len(results)}
    for k in keys:
        vals = [r["metrics"].get(k) for r in results]
        out[k] = None if any(v is None for v in vals) else float(sum(vals) / len(vals))
    out[f"{headline}_values"] = [float(r["metrics"][headline]) for r in results]
    outs = _outputs(results)
    if outs is None:
        out["interval_note"] = NO_OUTPUTS
        return out
    scorers = [intervals.scorer(o, headline) for o in outs]
    kw = {"resamples": resamples} if resamples else {}
    iv = intervals.interval(scorers[0], **kw) if len(scorers) == 1 else intervals.seeds_interval(scorers, **kw)
    out.update({f"{headline}_low": iv.low, f"{headline}_high": iv.high, "interval_method": iv.method})
    return out


def paired_step(previous: Sequence[dict[str, Any]], current: Sequence[dict[str, Any]], headline: str = "top1", *,
                resamples: int | None = None) -> dict[str, Any]:
    """The row's change against the previous row on the same test samples, seed paired with seed: ``delta_low``,
    ``delta_high``, ``delta_p`` (paired permutation test); empty when either row kept no outputs."""
    from rs_transfer.studies import intervals

    a, b = _outputs(current), _outputs(previous)
    if a is None or b is None:
        return {}
    n = min(len(a), len(b))
    try:
        cmp = intervals.paired(a[:n], b[:n], headline, **({"resamples": resamples} if resamples else {}))
    except ValueError:   # e.g. another evaluation set (minival on, unreadable files differ): no paired test
        return {}
    d = cmp.difference
    return {"delta_low": d.low, "delta_high": d.high, "delta_p": cmp.p_value}


def value_text(row: dict[str, Any], key: str = "top1") -> str:
    """``79.1 [78.5, 79.7]``; ``-`` without a value; the value and the reason without an interval."""
    v = row.get(key)
    if v is None:
        return "-"
    if row.get(f"{key}_low") is not None:
        return f"{v:.1f} [{row[f'{key}_low']:.1f}, {row[f'{key}_high']:.1f}]"
    return f"{v:.1f}" + (f" ({row['interval_note']})" if row.get("interval_note") else "")


def delta_text(row: dict[str, Any]) -> str:
    """The change against the previous row: signed only together with its interval (and p); without an interval
    the bare difference is printed unsigned and marked, so that noise never reads as a gain."""
    d = row.get("delta")
    if d is None:
        return "-"
    if row.get("delta_low") is not None:
        return f"{d:+.1f} [{row['delta_low']:+.1f}, {row['delta_high']:+.1f}] p={row['delta_p']:.2g}"
    return f"{d:.1f} (no interval)"


def seeds_line(rows: Sequence[dict[str, Any]], paper: str = "", *, deltas: bool = True) -> str:
    """How many runs each row averages (said in every report), and the paper's count when it has one."""
    counts = sorted({int(r.get("seeds", 1)) for r in rows}) or [1]
    ours = " or ".join(map(str, counts))
    text = (f"Ours: mean of {ours} run(s) per row (--seeds), 95 % interval = bootstrap over seeds, then test "
            "samples.")
    if deltas:
        text += (" Δ = change to the previous row on the same test samples, seed paired with seed, with its "
                 "interval and paired permutation p.")
    return text + (f" {paper}" if paper else "")
