"""The report page's figures as inline SVG, drawn with matplotlib.

Why matplotlib SVG (and not plotly): matplotlib is already a dependency and already draws the report PNGs, so the
page shows the SAME figures (``report.chart`` is reused as is) without a new package; an SVG is text that lives
inside the page (no file beside it, nothing to fetch), stays sharp at any zoom, and a 3-panel scaling plot is
~50-150 kB where plotly's offline bundle alone is ~3.5 MB per page. Hover labels on the scaling study's Pareto
plots are SVG ``<title>`` elements on each point, which every browser shows as a tooltip without any script.

Text stays text (``svg.fonttype = none``): smaller, selectable, searchable with the browser's find.
"""
from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from typing import Any

from rs_transfer.studies.html import e


def _rc() -> dict[str, Any]:
    return {"svg.fonttype": "none", "svg.hashsalt": "rs-transfer", "font.size": 9}


def svg_of(fig: Any, titles: dict[str, str] | None = None) -> str:
    """A figure as an inline ``<svg>`` element (no XML prolog). ``titles``: gid -> hover text, inserted as the
    first child of the element matplotlib wrote with that id."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    for gid, text in (titles or {}).items():
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{e(text)}</title>', 1)
    # A page holds several figures: matplotlib's ids (clip paths, markers) are made unique per figure.
    prefix = "f" + hashlib.sha1(svg.encode()).hexdigest()[:8] + "-"
    svg = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(r'(url\(#|xlink:href="#|href="#)([^")]+)', lambda m: f"{m.group(1)}{prefix}{m.group(2)}", svg)
    return svg


def report_chart(rep: Any) -> str:
    """The Table 4 report's chart, the very figure ``report.png`` shows."""
    import matplotlib

    from rs_transfer.studies.report import chart

    with matplotlib.rc_context(_rc()):
        return svg_of(chart(rep))


def bounds(cell: dict[str, Any], key: str = "") -> tuple[float, float] | None:
    """A confidence interval's (low, high) where the report computed one, else None. Table 4 cells carry ``low`` /
    ``high`` (or ``ci_low`` / ``ci_high``); a row study's row carries ``<key>_low`` / ``<key>_high``."""
    names = [(f"{key}_low", f"{key}_high")] if key else [("low", "high"), ("ci_low", "ci_high")]
    for lo, hi in names:
        if isinstance(cell.get(lo), (int, float)) and isinstance(cell.get(hi), (int, float)):
            return float(cell[lo]), float(cell[hi])
    return None


def interval(cell: dict[str, Any]) -> tuple[float, float] | None:
    """The cell's interval as (below, above) error-bar lengths: its confidence interval when the report has one
    (:func:`bounds`), else ± the sample std over seeds, else None (one seed, nothing to draw)."""
    m = cell.get("mean")
    if m is None:
        return None
    b = bounds(cell)
    if b is not None:
        return (max(0.0, m - b[0]), max(0.0, b[1] - m))
    if cell.get("std") is not None:
        return (float(cell["std"]), float(cell["std"]))
    return None


def task_chart(data: dict[str, Any], task: str) -> str:
    """One task: a horizontal bar per row (mean over seeds), its interval as an error bar, every seed as a dot,
    the paper's value as a hatched bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, cells[task]) for label, cells in data["rows"].items()
            if task in cells and cells[task].get("mean") is not None]
    paper = [(label, vals[task]) for label, vals in (data.get("paper") or {}).items() if task in vals]
    labels = [r for r, _ in rows] + [p for p, _ in paper]
    with matplotlib.rc_context(_rc()):
        fig, ax = plt.subplots(figsize=(7.5, 0.45 * max(2, len(labels)) + 0.9))
        for i, (label, c) in enumerate(rows):
            iv = interval(c)
            ax.barh(i, c["mean"], color="#4c78a8", height=0.6)
            if iv is not None:
                ax.errorbar(c["mean"], i, xerr=[[iv[0]], [iv[1]]], fmt="none", ecolor="black", capsize=3, lw=1)
            ax.plot(c.get("values") or [], [i] * len(c.get("values") or []), "o", color="#f58518", ms=3)
        for j, (label, v) in enumerate(paper):
            ax.barh(len(rows) + j, v, color="#bab0ac", hatch="//", edgecolor="#555", height=0.6, lw=0.5)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
        has_ci = any(bounds(c) is not None for _, c in rows)
        what = "95% confidence interval" if has_ci else "± sample std over seeds"
        metric = data.get("metrics", {}).get(task, "")
        lower = task in set(data.get("lower_is_better") or [])
        ax.set_xlabel(f"{metric}{' (lower is better)' if lower else ''}; bar = mean, whisker = {what}, "
                      "dots = seeds")
        ax.set_title(data.get("titles", {}).get(task, task))
        ax.grid(True, axis="x", alpha=0.3)
        return svg_of(fig)


def additive_chart(rows: Sequence[dict[str, Any]], title: str) -> str:
    """An additive study (Tables 1 and 5): our top-1 per row beside the paper's, rows in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(_rc()):
        fig, ax = plt.subplots(figsize=(8, 0.4 * max(3, len(rows)) + 1))
        ys = range(len(rows))
        ax.barh([y - 0.2 for y in ys], [r.get("top1") or 0 for r in rows], height=0.4, color="#4c78a8",
                label="ours")
        ivs = [(y, r["top1"], bounds(r, "top1")) for y, r in zip(ys, rows) if r.get("top1") is not None]
        ivs = [(y, v, b) for y, v, b in ivs if b is not None]
        if ivs:   # the row's 95 % interval over seeds (and samples) where the study computed one
            ax.errorbar([v for _, v, _ in ivs], [y - 0.2 for y, _, _ in ivs], fmt="none", ecolor="black",
                        capsize=3, lw=1, xerr=[[max(0.0, v - b[0]) for _, v, b in ivs],
                                               [max(0.0, b[1] - v) for _, v, b in ivs]], label="95% interval")
        paper = [(y, r["paper_top1"]) for y, r in zip(ys, rows) if r.get("paper_top1") is not None]
        if paper:
            ax.barh([y + 0.2 for y, _ in paper], [v for _, v in paper], height=0.4, color="#bab0ac", hatch="//",
                    edgecolor="#555", lw=0.5, label="paper")
        ax.set_yticks(list(ys))
        ax.set_yticklabels([r.get("label") or r.get("id") for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("top-1 (%)")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
        return svg_of(fig)


PARETO_AXES = (("gflops", "GFLOPs"), ("train_time_s", "training time (s)"),
               ("infer_ms_per_image", "inference time (ms / image)"))


def pareto_charts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The scaling study's three plots (top-1 against FLOPs, training time, inference time; one line per
    (epochs, width, resolution) through the depths), each point with a hover label naming the cell, and the
    Pareto front (no other cell is both cheaper and better) drawn as a dashed step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    series: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((r["epochs"], r["width"], r["resolution"]), []).append(r)
    for key, label in PARETO_AXES:
        with matplotlib.rc_context(_rc()):
            fig, ax = plt.subplots(figsize=(7.5, 4.2))
            titles: dict[str, str] = {}
            for (ep, w, res), cells in sorted(series.items()):
                pts = sorted((r for r in cells if r.get(key) is not None), key=lambda r: r["depth"])
                if not pts:
                    continue
                line, = ax.plot([r[key] for r in pts], [r["top1"] for r in pts], "-", alpha=0.6,
                                label=f"{ep} ep, w{w:g}, {res}px")
                for r in pts:
                    gid = f"pt-{key}-{r['id']}"
                    ax.plot([r[key]], [r["top1"]], "o", color=line.get_color(), ms=6, gid=gid)
                    titles[gid] = (f"{r['id']}: depth {r['depth']}, width {r['width']:g}, {r['resolution']} px, "
                                   f"{r['epochs']} ep; top-1 {r['top1']:.2f}; {label} {r[key]:.4g}")
            front = pareto_front([(r[key], r["top1"]) for r in rows if r.get(key) is not None])
            if len(front) > 1:
                ax.step([x for x, _ in front], [y for _, y in front], where="post", ls="--", color="gray",
                        lw=1, label="Pareto front")
            xs = [r[key] for r in rows if r.get(key) is not None and r[key] > 0]
            if xs and max(xs) / min(xs) > 10:   # log only over a decade or more (else ticks read 2.34 x 10^1)
                ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("top-1 (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
            missing = [r["id"] for r in rows if r.get(key) is None]
            caption = f"top-1 against {label} (hover a point for its cell)"
            if missing:
                caption += f"; not measured, left out: {', '.join(missing)}"
            out.append((caption, svg_of(fig, titles)))
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost (lower) and score (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front
