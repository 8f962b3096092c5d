"""The ``study transfer12`` report: per protocol (and k) datasets x sources, the mean and Kornblith et al.'s mean
log-odds over the datasets every source has, Spearman's rank correlation with ImageNet top-1, a Figure 1-style plot,
and the cited reference rows (``results/paper_transfer12.json``: SimCLR's Table 8 and Table B.5), kept apart from
the study's own rows. Pure functions of the cells, so a test can give them any numbers."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any


def log_odds(percent: float) -> float:
    """log(p / (1 - p)) of a percentage, p clipped to [0.001, 0.999] (Kornblith et al.'s transform)."""
    p = min(max(percent / 100.0, 0.001), 0.999)
    return math.log(p / (1.0 - p))


def averages(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, mean log-odds) of a row's values over the datasets averaged; (None, None) for none."""
    if not values:
        return None, None
    return sum(values) / len(values), sum(map(log_odds, values)) / len(values)


PAPER_TRANSFER12 = "paper_transfer12.json"


@functools.lru_cache(maxsize=1)
def _paper() -> dict[str, Any]:
    import json

    from rs_transfer.results import reference_file

    return json.loads(reference_file(PAPER_TRANSFER12).read_text())


def paper_rows(protocol: str, tasks: list[str], common: list[str]) -> list[dict[str, Any]]:
    """The cited reference rows for ``protocol`` (none for fewshot), their values on ``tasks`` (None where the paper
    has no such dataset), the mean and mean log-odds over ``common`` (the study's own common datasets, so a reference
    row and a study row average the same datasets; None if the paper lacks one of them)."""
    data = _paper()
    rows = []
    for tab in data["tables"]:
        for r in tab["rows"]:
            if r["protocol"] != protocol:
                continue
            by_task = dict(zip(data["columns"], r["values"], strict=True))
            mean, mean_log_odds = averages([by_task[t] for t in common] if set(common) <= set(by_task) else [])
            rows.append({"source": f"paper: {r['method']} ({tab['backbone']}; SimCLR {tab['table']})",
                         "short": f"{r['method']} {tab['backbone'].replace('ResNet-', 'R')} ({tab['table']})",
                         "imagenet_top1": r["imagenet_top1"], "values": {t: by_task.get(t) for t in tasks},
                         "mean": mean, "mean_log_odds": mean_log_odds})
    return rows


def build_report(cells: list[dict[str, Any]], tasks: list[str], labels: list[str], protocol: str,
                 ks: list[Any], top1: dict[str, float | None], preset: str) -> dict[str, Any]:
    """Tables (one per k), means, mean log-odds and rank correlations from the cells' values."""
    import numpy as np
    from scipy import stats

    from rs_transfer.tasks import title

    tables = []
    for k in ks:
        rows = []
        for label in labels:
            vals = {t: [c["value"] for c in cells if c["source"] == label and c["task"] == t and c["shots"] == k
                        and c.get("state") == "done"] for t in tasks}
            rows.append({"source": label, "imagenet_top1": top1.get(label),
                         "values": {t: (float(np.mean(v)) if v else None) for t, v in vals.items()},
                         "seeds": {t: len(v) for t, v in vals.items()}})
        common = [t for t in tasks if all(r["values"][t] is not None for r in rows)]
        for r in rows:
            r["mean"], r["mean_log_odds"] = averages([r["values"][t] for t in common])
        pairs = [(r["imagenet_top1"], r["mean_log_odds"]) for r in rows
                 if r["imagenet_top1"] is not None and r["mean_log_odds"] is not None]
        rho = None
        if len(pairs) >= 3:
            res = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
            rho = None if math.isnan(res.statistic) else float(res.statistic)
        tables.append({"shots": k, "rows": rows, "common_tasks": common, "spearman_vs_imagenet": rho,
                       "n_with_imagenet": len(pairs), "paper_rows": paper_rows(protocol, tasks, common)})
    return {"study": "transfer12", "protocol": protocol, "preset": preset, "tasks": tasks,
            "titles": {t: title(t) for t in tasks}, "tables": tables, "paper_source": _paper_source()}


def _paper_source() -> str:
    data = _paper()
    return f"{data['source']}. {data['supervised_note']}. Not included: {data['not_included']}."


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def to_markdown(rep: dict[str, Any]) -> str:
    mini = ", MINI preset: smoke test, not benchmark numbers" if rep["preset"] == "mini" else ""
    lines = [f"# Transfer suite ({rep['protocol']}{mini})",
             "", "Kornblith, Shlens & Le 2019's datasets (Birdsnap left out: no stable release). Metrics: top-1; mean "
             "per-class accuracy for Aircraft, Pets, Caltech-101, Flowers; 11-point mAP for VOC2007. Mean and mean "
             "log-odds over the datasets every source has.", ""]
    for tab in rep["tables"]:
        if tab["shots"] is not None:
            lines += [f"## {tab['shots']}-shot" if tab["shots"] != "vtab1k" else "## VTAB-1k (1000 examples)", ""]
        head = ["source", "ImageNet top-1", *[rep["titles"][t] for t in rep["tasks"]], "mean", "mean log-odds"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in tab["rows"]:
            vals = [_fmt(r["values"][t]) for t in rep["tasks"]]
            lines.append("| " + " | ".join([r["source"], _fmt(r["imagenet_top1"]), *vals, _fmt(r["mean"]),
                                             _fmt(r["mean_log_odds"])]) + " |")
        for r in tab.get("paper_rows", []):
            cells = [r["source"], _fmt(r["imagenet_top1"]), *[_fmt(r["values"][t]) for t in rep["tasks"]],
                     _fmt(r["mean"]), _fmt(r["mean_log_odds"])]
            lines.append("| " + " | ".join(f"*{c}*" if c != "—" else c for c in cells) + " |")
        rho = tab["spearman_vs_imagenet"]
        lines += ["", f"Spearman rank correlation of mean log-odds with ImageNet top-1: {_fmt(rho)} "
                      f"({tab['n_with_imagenet']} sources record ImageNet top-1; 3 needed; paper rows not counted)", ""]
        if tab.get("paper_rows"):
            lines += [f"Italic rows: cited, not run here: {rep['paper_source']} Their protocol differs from ours "
                      "in places (README, \"Transfer suite\"): compare with care.", ""]
    return "\n".join(lines)


def to_csv(rep: dict[str, Any]) -> str:
    from rs_transfer.studies.tables import to_csv as csv_rows

    rows = [{"shots": tab["shots"], "source": r["source"], "imagenet_top1": r["imagenet_top1"],
             **{t: r["values"][t] for t in rep["tasks"]}, "mean": r["mean"], "mean_log_odds": r["mean_log_odds"]}
            for tab in rep["tables"] for r in [*tab["rows"], *tab.get("paper_rows", [])]]
    return csv_rows(rows, ["shots", "source", "imagenet_top1", *rep["tasks"], "mean", "mean_log_odds"])


def to_png(rep: dict[str, Any]) -> bytes:
    """Mean log-odds against ImageNet top-1 (sources without it at the left edge, marked), one panel per k."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tabs = rep["tables"]
    fig, axes = plt.subplots(1, len(tabs), figsize=(4.5 * len(tabs), 4), squeeze=False)
    for ax, tab in zip(axes[0], tabs):
        known = [r["imagenet_top1"] for r in [*tab["rows"], *tab.get("paper_rows", [])]
                 if r["imagenet_top1"] is not None and r["mean_log_odds"] is not None]
        left = (min(known) - 1.0) if known else 0.0
        for r in tab["rows"]:
            if r["mean_log_odds"] is None:
                continue
            x = r["imagenet_top1"] if r["imagenet_top1"] is not None else left
            ax.scatter([x], [r["mean_log_odds"]], marker="o" if r["imagenet_top1"] is not None else "x")
            ax.annotate(r["source"], (x, r["mean_log_odds"]), fontsize=7)
        for r in tab.get("paper_rows", []):          # cited points: grey squares (those with ImageNet top-1)
            if r["mean_log_odds"] is not None and r["imagenet_top1"] is not None:
                ax.scatter([r["imagenet_top1"]], [r["mean_log_odds"]], marker="s", color="0.6")
                ax.annotate(r["short"], (r["imagenet_top1"], r["mean_log_odds"]), fontsize=6, color="0.4")
        ax.set_xlabel("ImageNet top-1 (%)" + ("" if known else " (not recorded)"))
        ax.set_ylabel("transfer: mean log-odds")
        ax.set_title(f"{rep['protocol']}" + (f", k={tab['shots']}" if tab["shots"] is not None else ""))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write(rep: dict[str, Any], out: Path) -> dict[str, Path]:
    from rs_transfer.studies.tables import write_report_files

    return write_report_files(out / "report", markdown=to_markdown(rep), csv_text=to_csv(rep), data=rep,
                              png=to_png(rep))
