"""Table 4-style reports from results.json files: Markdown, CSV, JSON and a PNG chart, each written atomically.

Rows are backbone x weight source x protocol (x preset: mini runs are labelled ``[mini]`` and never mixed with
paper-preset numbers); columns are tasks; a cell is the mean +- sample standard deviation (ddof=1) over seeds, with
the number of seeds. A task without results is shown as missing ("—"), never filled in. ``baseline`` adds a table of
differences against one row; ``paper=True`` adds the paper's own Table 4 (``results/paper_table4.json``) as
reference rows.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_transfer.errors import UserError
from rs_transfer.results import find_results, read_results, write_bytes_atomic, write_json_atomic

PAPER_TABLE = Path(__file__).resolve().parents[1] / "results" / "paper_table4.json"
MISSING = "—"


def weights_label(weights: dict[str, Any] | str | None) -> str:
    """``resnet152.tv_in1k`` for named sources, the file stem for checkpoint files, ``scratch`` for none."""
    src = weights.get("source") if isinstance(weights, dict) else weights
    if not src:
        return "scratch"
    p = Path(str(src))
    return p.stem if ("/" in str(src) or p.suffix in {".pth", ".pt", ".safetensors", ".ckpt", ".bin"}) else str(src)


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    def text(self) -> str:
        if not self.values:
            return MISSING
        s = f"{self.mean:.2f}"
        if self.std is not None:
            s += f" ± {self.std:.2f}"
        return s + (f" (n={self.n})" if self.n > 1 else "")


@dataclass
class Report:
    tasks: list[str]
    titles: dict[str, str]
    metrics: dict[str, str]
    lower_better: set[str]
    rows: dict[str, dict[str, Cell]]          # row label -> task -> cell
    paper_rows: dict[str, dict[str, float]]
    baseline: str | None
    sources: list[str]

    def delta(self, row: str, task: str) -> float | None:
        if not self.baseline or self.baseline not in self.rows:
            return None
        a, b = self.rows[row].get(task, Cell()).mean, self.rows[self.baseline].get(task, Cell()).mean
        return None if a is None or b is None else a - b

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks, "titles": self.titles, "metrics": self.metrics, "baseline": self.baseline,
            "lower_is_better": sorted(self.lower_better), "sources": self.sources,
            "rows": {r: {t: {"mean": c.mean, "std": c.std, "n": c.n, "seeds": c.seeds, "values": c.values,
                             "delta": self.delta(r, t)} for t, c in cells.items()} for r, cells in self.rows.items()},
            "paper": self.paper_rows,
        }


def row_label(res: dict[str, Any]) -> str:
    label = f"{res['backbone']} / {weights_label(res.get('weights'))}"
    if res.get("protocol", "finetune") != "finetune":
        label += f" / {res['protocol']}"
    if res.get("preset") == "mini":
        label += " [mini]"
    return label


def load_paper(path: Path = PAPER_TABLE) -> dict[str, dict[str, float]]:
    data = json.loads(Path(path).read_text())
    return {f"paper: {r['method']} ({data.get('backbone', '')}, {r['epochs']} ep)": dict(r["values"])
            for r in data["rows"]}


def build_report(paths: Iterable[str | Path], *, tasks: Sequence[str] | None = None, baseline: str | None = None,
                 paper: bool = False) -> Report:
    from rs_transfer.tasks import TABLE4_TASKS, get_task, title

    files = find_results(paths)
    runs = [(f, r) for f in files if (r := read_results(f)) is not None]
    if not runs and not tasks:
        raise UserError(f"no results.json found under {', '.join(map(str, paths))}; run `rs-transfer run` or "
                        "`rs-transfer study table4` first")
    found = {r["task"] for _, r in runs}
    cols = list(tasks) if tasks else [t for t in TABLE4_TASKS] + sorted(found - set(TABLE4_TASKS))
    rows: dict[str, dict[str, Cell]] = defaultdict(dict)
    metrics: dict[str, str] = {}
    lower: set[str] = set()
    seen: dict[tuple[str, str, int], Path] = {}
    for f, r in runs:
        if r["task"] not in cols:
            continue
        label = row_label(r)
        key = (label, r["task"], int(r.get("seed", 0)))
        if key in seen:  # the same run copied twice: count it once
            continue
        seen[key] = f
        cell = rows[label].setdefault(r["task"], Cell())
        cell.values.append(float(r["value"]))
        cell.seeds.append(int(r.get("seed", 0)))
        metrics[r["task"]] = r["metric"]
        if not r.get("higher_is_better", True):
            lower.add(r["task"])
    if baseline is not None and baseline not in rows:
        matches = [r for r in rows
                   if r.replace(" [mini]", "").split(" / ")[1:2] == [baseline] or r.startswith(baseline)]
        if not matches:
            raise UserError(f"baseline {baseline!r} matches no row; rows: {', '.join(rows) or 'none'}")
        baseline = min(matches, key=lambda r: (r.count(" / "), len(r)))  # prefer the plain fine-tuning row
    for t in cols:  # columns without results still name their metric
        if t not in metrics:
            try:
                metrics[t] = get_task(t).metric
            except Exception:  # noqa: BLE001  (absent or broken task module: the column just shows missing)
                pass
    return Report(cols, {t: title(t) for t in cols}, metrics, lower, dict(rows), load_paper() if paper else {},
                  baseline, [str(f) for f, _ in runs])


def to_markdown(rep: Report) -> str:
    head = ["backbone / weights"] + [f"{rep.titles[t]} ({rep.metrics.get(t, '?')}"
                                     + (", lower better" if t in rep.lower_better else "") + ")" for t in rep.tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cells in rep.rows.items():
        lines.append("| " + " | ".join([label] + [cells.get(t, Cell()).text() for t in rep.tasks]) + " |")
    for label, vals in rep.paper_rows.items():
        lines.append("| " + " | ".join([f"*{label}*"] + [f"*{vals[t]:.1f}*" if t in vals else MISSING
                                                          for t in rep.tasks]) + " |")
    out = ["# Transfer results (Table 4 style)", "",
           "Mean ± sample std over seeds (n = number of seeds). " + MISSING + " = no result (task not run or not "
           "available). Rows marked [mini] are smoke tests on generated data, not benchmark numbers.", ""] + lines
    if rep.baseline and len(rep.rows) > 1:
        out += ["", f"## Difference to baseline: {rep.baseline}", "",
                "| backbone / weights | " + " | ".join(rep.titles[t] for t in rep.tasks) + " |",
                "|" + "---|" * (len(rep.tasks) + 1)]
        for label in rep.rows:
            if label == rep.baseline:
                continue
            ds = [rep.delta(label, t) for t in rep.tasks]
            out.append("| " + " | ".join([label] + [MISSING if d is None else f"{d:+.2f}" for d in ds]) + " |")
    if rep.paper_rows:
        out += ["", "Italic rows: the paper's Table 4 (ResNet-152, vanilla architecture; results/paper_table4.json)."]
    return "\n".join(out) + "\n"


def to_csv(rep: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "task", "metric", "mean", "std", "n", "seeds", "delta_vs_baseline", "reference"])
    for label, cells in rep.rows.items():
        for t in rep.tasks:
            c = cells.get(t, Cell())
            d = rep.delta(label, t)
            w.writerow([label, t, rep.metrics.get(t, ""), "" if c.mean is None else f"{c.mean:.4f}",
                        "" if c.std is None else f"{c.std:.4f}", c.n, " ".join(map(str, c.seeds)),
                        "" if d is None else f"{d:.4f}", "no"])
    for label, vals in rep.paper_rows.items():
        for t in rep.tasks:
            w.writerow([label, t, "", vals.get(t, ""), "", "", "", "", "yes"])
    return buf.getvalue()


def to_png(rep: Report) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(label, [cells.get(t, Cell()) for t in rep.tasks], False) for label, cells in rep.rows.items()]
    series += [(label, [Cell([vals[t]]) if t in vals else Cell() for t in rep.tasks], True)
               for label, vals in rep.paper_rows.items()]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(rep.tasks)), 4.5 + 0.2 * len(series)))
    width = 0.8 / max(1, len(series))
    for i, (label, cells, ref) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rep.tasks))]
        means = [c.mean if c.mean is not None else 0.0 for c in cells]
        errs = [c.std or 0.0 for c in cells]
        ax.bar(xs, means, width, yerr=errs, label=label, hatch="//" if ref else None, alpha=0.6 if ref else 1.0,
               capsize=2)
        for x, c in zip(xs, cells):
            if c.mean is None:
                ax.text(x, 0.5, "missing", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rep.tasks)))
    ax.set_xticklabels([f"{rep.titles[t]}\n({rep.metrics.get(t, '')})" for t in rep.tasks], fontsize=8)
    ax.set_ylabel("score (task metric)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    ax.set_title("Transfer results (Table 4 style); hatched = paper")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(rep: Report, out_dir: str | Path, name: str = "report") -> dict[str, Path]:
    """report.md / .csv / .json / .png in ``out_dir``, each replaced atomically."""
    out = Path(out_dir)
    return {"md": write_bytes_atomic(out / f"{name}.md", to_markdown(rep).encode()),
            "csv": write_bytes_atomic(out / f"{name}.csv", to_csv(rep).encode()),
            "json": write_json_atomic(out / f"{name}.json", rep.to_dict()),
            "png": write_bytes_atomic(out / f"{name}.png", to_png(rep))}
