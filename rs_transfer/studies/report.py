"""Table 4-style reports from results.json files: Markdown, CSV, JSON and a PNG chart, each written atomically.

Rows are backbone x weight source x protocol (x preset: mini runs are labelled ``[mini]`` and never mixed with
paper-preset numbers); columns are tasks; a cell is the mean +- sample standard deviation (ddof=1) over seeds, with
the number of seeds. A task without results is shown as missing ("—"), never filled in. ``baseline`` adds a table of
differences against one row; ``paper=True`` adds the paper's own Table 4 (``results/paper_table4.json``) as
reference rows.

Nothing is dropped silently: an unreadable results.json (torn write, not JSON, missing keys) and a duplicate run
(same row, task and seed as another file: a copied folder, or a re-run whose value may differ) are listed in every
output ("Not counted") and on the console; the first file in path order is the one counted.
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
from rs_transfer.results import UnreadableResults, find_results, load_results, reference_file

PAPER_TABLE4 = "paper_table4.json"
MISSING = "—"


def weights_label(weights: dict[str, Any] | str | None) -> str:
    """``resnet152.tv_in1k`` for named sources, the file stem for checkpoint files, ``scratch`` for none. A run's
    exported ``weights.safetensors`` (every pre-training run leaves one under that name) is labelled by its work
    dir, so two pre-trained sources stay two rows."""
    src = weights.get("source") if isinstance(weights, dict) else weights
    if not src:
        return "scratch"
    p = Path(str(src).rstrip("/"))
    if p.name == "weights.safetensors" and p.parent.name:
        return p.parent.name
    return p.stem if ("/" in str(src) or p.suffix in {".pth", ".pt", ".safetensors", ".ckpt", ".bin"}) else str(src)


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)     # each seed's run folder (its eval_outputs.npz, if kept)
    skipped_files: int = 0        # unreadable data files the runs skipped (results.json "skipped_files")

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
        s += f" (n={self.n})" if self.n > 1 else ""
        return s + (f" [{self.skipped_files} unreadable files skipped]" if self.skipped_files else "")


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
    unreadable: list[dict[str, str]] = field(default_factory=list)   # {"path", "reason"}
    duplicates: list[dict[str, Any]] = field(default_factory=list)   # {"path", "kept", "row", "task", "seed", ...}
    stats: Any = None     # rs_transfer.report_stats.TableStats: intervals, paired differences (None: not computed)

    def skipped_lines(self) -> list[str]:
        """One line per file that is not counted, with the reason (Markdown list items and console lines)."""
        out = [f"{u['path']}: unreadable, {u['reason']}" for u in self.unreadable]
        for d in self.duplicates:
            same = ("same value" if d["value"] == d["kept_value"]
                    else f"value {d['value']} differs from {d['kept_value']}")
            out.append(f"{d['path']}: duplicate of {d['kept']} ({d['row']}, {d['task']}, seed {d['seed']}; {same})")
        return out

    def delta(self, row: str, task: str) -> float | None:
        if not self.baseline or self.baseline not in self.rows:
            return None
        a, b = self.rows[row].get(task, Cell()).mean, self.rows[self.baseline].get(task, Cell()).mean
        return None if a is None or b is None else a - b

    def cell_stats(self, row: str, task: str) -> dict[str, Any]:
        """The interval and paired-difference keys of one cell (empty when no statistics were computed)."""
        if self.stats is None:
            return {}
        out: dict[str, Any] = {}
        if (row, task) in self.stats.cells:
            out.update(self.stats.cells[(row, task)].to_dict())
        if (row, task) in self.stats.diffs:
            out.update(self.stats.diffs[(row, task)].to_dict())
        return out

    def to_dict(self) -> dict[str, Any]:
        from rs_transfer.studies.stats import CORRECTION, TEST

        stats = None if self.stats is None else {"alpha": self.stats.alpha, "resamples": self.stats.resamples,
                                                 "test": TEST, "correction": CORRECTION, "mini": self.stats.mini}
        return {
            "tasks": self.tasks, "titles": self.titles, "metrics": self.metrics, "baseline": self.baseline,
            "lower_is_better": sorted(self.lower_better), "sources": self.sources, "statistics": stats,
            "rows": {r: {t: {"mean": c.mean, "std": c.std, "n": c.n, "seeds": c.seeds, "values": c.values,
                             "delta": self.delta(r, t), **self.cell_stats(r, t)} for t, c in cells.items()}
                     for r, cells in self.rows.items()},
            "paper": self.paper_rows, "unreadable": self.unreadable, "duplicates": self.duplicates,
        }


def row_label(res: dict[str, Any]) -> str:
    label = f"{res['backbone']} / {weights_label(res.get('weights'))}"
    if res.get("protocol", "finetune") != "finetune":
        label += f" / {res['protocol']}"
    if res.get("preset") == "mini":
        label += " [mini]"
    return label


def load_paper(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The paper's Table 4 rows (default: the shipped ``paper_table4.json``, source tree or installed package)."""
    data = json.loads(Path(path or reference_file(PAPER_TABLE4)).read_text())
    return {f"paper: {r['method']} ({data.get('backbone', '')}, {r['epochs']} ep)": dict(r["values"])
            for r in data["rows"]}


def build_report(paths: Iterable[str | Path], *, tasks: Sequence[str] | None = None, baseline: str | None = None,
                 paper: bool = False, alpha: float = 0.05, intervals: bool = True,
                 resamples: int | None = None) -> Report:
    """The report over every results.json under ``paths``; ``intervals``: also every cell's 95 % interval and the
    paired differences to ``baseline`` with adjusted p-values at level ``alpha`` (rs_transfer/studies/stats.py)."""
    from rs_transfer.tasks import TABLE4_TASKS, get_task, title

    paths = list(paths)
    runs: list[tuple[Path, dict[str, Any]]] = []
    unreadable: list[dict[str, str]] = []
    for f in find_results(paths):
        try:
            runs.append((f, load_results(f)))
        except UnreadableResults as err:
            unreadable.append({"path": str(f), "reason": str(err)})
    if not runs and not tasks:
        bad = (f" ({len(unreadable)} unreadable: {unreadable[0]['path']}: {unreadable[0]['reason']})"
               if unreadable else "")
        raise UserError(f"no usable results.json found under {', '.join(map(str, paths))}{bad}; run `rs-transfer "
                        "run` or `rs-transfer study table4` first")
    found = {r["task"] for _, r in runs}
    cols = list(tasks) if tasks else [t for t in TABLE4_TASKS] + sorted(found - set(TABLE4_TASKS))
    rows: dict[str, dict[str, Cell]] = defaultdict(dict)
    metrics: dict[str, str] = {}
    lower: set[str] = set()
    seen: dict[tuple[str, str, int], tuple[Path, float]] = {}
    duplicates: list[dict[str, Any]] = []
    for f, r in runs:
        if r["task"] not in cols:
            continue
        label = row_label(r)
        key = (label, r["task"], int(r.get("seed", 0)))
        if key in seen:  # counted once; listed, because a differing value means two different runs
            kept, kept_value = seen[key]
            duplicates.append({"path": str(f), "kept": str(kept), "row": label, "task": r["task"], "seed": key[2],
                               "value": float(r["value"]), "kept_value": kept_value})
            continue
        seen[key] = (f, float(r["value"]))
        cell = rows[label].setdefault(r["task"], Cell())
        cell.values.append(float(r["value"]))
        cell.seeds.append(int(r.get("seed", 0)))
        cell.dirs.append(str(f.parent))
        skipped = r.get("skipped_files") or {}
        cell.skipped_files += int(skipped.get("train", 0)) + int(skipped.get("eval", 0))
        metrics[r["task"]] = r["metric"]
        if not r.get("higher_is_better", True):
            lower.add(r["task"])
    if baseline is not None and baseline not in rows:
        matches = [r for r in rows
                   if r.replace(" [mini]", "").split(" / ")[1:2] == [baseline] or r.startswith(baseline)]
        if not matches:
            raise UserError(f"baseline {baseline!r} matches no row; rows: {', '.join(rows) or 'none'}")
        baseline = min(matches, key=lambda r: (r.count(" / "), len(r)))  # prefer the plain fine-tuning row
    if baseline in rows:   # the row the differences are taken against comes first, as in the paper's tables
        rows = defaultdict(dict, {baseline: rows[baseline], **{k: v for k, v in rows.items() if k != baseline}})
    for t in cols:  # columns without results still name their metric
        if t not in metrics:
            try:
                metrics[t] = get_task(t).metric
            except Exception:  # noqa: BLE001  (absent or broken task module: the column just shows missing)
                pass
    used = {str(f) for f, _ in seen.values()}
    rep = Report(cols, {t: title(t) for t in cols}, metrics, lower, dict(rows), load_paper() if paper else {},
                 baseline, [str(f) for f, _ in runs if str(f) in used], unreadable, duplicates)
    if intervals:
        from rs_transfer.studies.stats import table_stats

        rep.stats = table_stats(rep, alpha=alpha, resamples=resamples)
    return rep


def to_markdown(rep: Report) -> str:
    head = ["backbone / weights"] + [f"{rep.titles[t]} ({rep.metrics.get(t, '?')}"
                                     + (", lower better" if t in rep.lower_better else "") + ")" for t in rep.tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cells in rep.rows.items():
        lines.append("| " + " | ".join([label] + [_cell_md(rep, label, t) for t in rep.tasks]) + " |")
    for label, vals in rep.paper_rows.items():
        lines.append("| " + " | ".join([f"*{label}*"] + [f"*{vals[t]:.1f}*" if t in vals else MISSING
                                                          for t in rep.tasks]) + " |")
    what = ("Mean over seeds with its 95 % interval." if rep.stats is not None else
            "Mean ± sample std over seeds (n = number of seeds).")
    out = ["# Transfer results (Table 4 style)", "",
           what + " " + MISSING + " = no result (task not run or not "
           "available). Rows marked [mini] are smoke tests on generated data, not benchmark numbers.", ""]
    if rep.stats is not None:
        out += [*rep.stats.legend(rep.baseline if len(rep.rows) > 1 else None), ""]
    out += lines
    if rep.baseline and len(rep.rows) > 1:
        out += ["", f"## Difference to baseline: {rep.baseline}", "",
                "| backbone / weights | " + " | ".join(rep.titles[t] for t in rep.tasks) + " |",
                "|" + "---|" * (len(rep.tasks) + 1)]
        for label in rep.rows:
            if label == rep.baseline:
                continue
            out.append("| " + " | ".join([label] + [_diff_md(rep, label, t) for t in rep.tasks]) + " |")
    if rep.paper_rows:
        out += ["", "Italic rows: the paper's Table 4 (ResNet-152, vanilla architecture; results/paper_table4.json)."]
    if rep.unreadable or rep.duplicates:
        out += ["", f"## Not counted ({len(rep.unreadable)} unreadable, {len(rep.duplicates)} duplicate)", ""]
        out += [f"- {line}" for line in rep.skipped_lines()]
    return "\n".join(out) + "\n"


def _cell_md(rep: Report, row: str, task: str) -> str:
    cell = rep.rows[row].get(task, Cell())
    if rep.stats is None or cell.mean is None:
        return cell.text()
    from rs_transfer.studies.stats import NO_OUTPUTS, cell_text

    stat = rep.stats.cells.get((row, task))
    if stat is None or stat.interval is None:   # an old run: mean (± std over seeds), and why no interval
        return f"{cell.text()}, {stat.note if stat else NO_OUTPUTS}"
    text = cell_text(stat, cell.mean, cell.n)
    return text + (f" [{cell.skipped_files} unreadable files skipped]" if cell.skipped_files else "")


def _diff_md(rep: Report, row: str, task: str) -> str:
    """With statistics: the paired difference with its interval and p-values (never a bare signed number);
    without: the plain difference of means."""
    if rep.stats is None:
        d = rep.delta(row, task)
        return MISSING if d is None else f"{d:+.2f}"
    from rs_transfer.studies.stats import NO_OUTPUTS, diff_text

    text = diff_text(rep.stats.diffs.get((row, task)))
    if text is None or text == NO_OUTPUTS:     # no interval: the means' difference, unsigned, says so
        d = rep.delta(row, task)
        return MISSING if d is None else f"{d:.2f} (difference of means), {NO_OUTPUTS}"
    return text


def to_csv(rep: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    extra = ["low", "high", "interval_method", "diff", "diff_low", "diff_high", "p_value", "p_adjusted",
             "significant", "note"]
    w.writerow(["row", "task", "metric", "mean", "std", "n", "seeds", "delta_vs_baseline", "reference", *extra])
    for label, cells in rep.rows.items():
        for t in rep.tasks:
            c = cells.get(t, Cell())
            d = rep.delta(label, t)
            st = rep.cell_stats(label, t)
            note = "; ".join(str(st[k]) for k in ("interval_note", "diff_note") if st.get(k))
            w.writerow([label, t, rep.metrics.get(t, ""), "" if c.mean is None else f"{c.mean:.4f}",
                        "" if c.std is None else f"{c.std:.4f}", c.n, " ".join(map(str, c.seeds)),
                        "" if d is None else f"{d:.4f}", "no",
                        *[_csv_value(st.get(k)) for k in extra[:-1]], note])
    for label, vals in rep.paper_rows.items():
        for t in rep.tasks:
            w.writerow([label, t, "", vals.get(t, ""), "", "", "", "", "yes", *[""] * len(extra)])
    return buf.getvalue()


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _error_bar(rep: Report, row: str, task: str, cell: Cell) -> tuple[str, float, float] | None:
    """(kind, below, above) of a cell's error bar: its interval when one was computed, else ± std when there is
    a spread over seeds, else none."""
    stat = rep.stats.cells.get((row, task)) if rep.stats is not None else None
    if stat is not None and stat.interval is not None and cell.mean is not None:
        return "interval", max(0.0, cell.mean - stat.interval.low), max(0.0, stat.interval.high - cell.mean)
    if cell.std is not None:
        return "std", cell.std, cell.std
    return None


def chart(rep: Report) -> Any:
    """The report's matplotlib Figure (Agg): grouped bars (one group per task, one colour per row), error bars
    only where there is a spread, an x for a missing cell. The legend is built from the same style list the bars
    use and sits outside the axes, so it can neither disagree with the bars nor cover the tick labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    series = [(label, [cells.get(t, Cell()) for t in rep.tasks], False) for label, cells in rep.rows.items()]
    series += [(label, [Cell([vals[t]]) if t in vals else Cell() for t in rep.tasks], True)
               for label, vals in rep.paper_rows.items()]
    cmap = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(rep.tasks)), 4.5))
    width = 0.8 / max(1, len(series))
    handles: list[Any] = []
    used_bars: set[str] = set()
    any_missing = False
    for i, (label, cells, ref) in enumerate(series):
        style = dict(facecolor=cmap(i % cmap.N), alpha=0.55 if ref else 1.0, hatch="//" if ref else None,
                     edgecolor="black" if ref else None, linewidth=0.5 if ref else 0)
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(rep.tasks))]
        drawn = [(x, c) for x, c in zip(xs, cells) if c.mean is not None]
        if drawn:
            ax.bar([x for x, _ in drawn], [c.mean for _, c in drawn], width, **style)
        if not ref:   # a cell's 95 % interval where its outputs were kept; else ± std over seeds (old runs)
            bars = [_error_bar(rep, label, t, c) for t, c in zip(rep.tasks, cells)]
            spread = [(x, c, b) for (x, c), b in zip(drawn, [b for b, c in zip(bars, cells) if c.mean is not None])
                      if b is not None]
            for kind in ("interval", "std"):
                these = [(x, c, b) for x, c, b in spread if b[0] == kind]
                if these:
                    used_bars.add(kind)
                    ax.errorbar([x for x, _, _ in these], [c.mean for _, c, _ in these],
                                yerr=[[b[1] for _, _, b in these], [b[2] for _, _, b in these]], fmt="none",
                                ecolor="black", elinewidth=0.8, capsize=2 if kind == "interval" else 0,
                                linestyle="-" if kind == "interval" else ":")
        missing = [x for x, c in zip(xs, cells) if c.mean is None]
        if missing:
            any_missing = True
            ax.plot(missing, [0] * len(missing), "x", color=style["facecolor"], markersize=5, clip_on=False)
        handles.append(Patch(label=label if drawn else f"{label} (no result)", **style))
    if any_missing:
        handles.append(Line2D([], [], marker="x", linestyle="none", color="gray", label="x = no result"))
    if "interval" in used_bars:
        handles.append(Line2D([], [], color="black", linewidth=0.8, label="error bar = 95 % bootstrap interval"))
    if "std" in used_bars:
        handles.append(Line2D([], [], color="black", linewidth=0.8, linestyle=":" if rep.stats is not None else "-",
                              label="error bar = ± sample std over seeds"
                              + (" (no outputs kept)" if rep.stats is not None else "")))
    ax.set_xticks(range(len(rep.tasks)))
    ax.set_xticklabels([f"{rep.titles[t]}\n({rep.metrics.get(t, '')})" for t in rep.tasks], fontsize=8)
    ax.set_xlim(-0.5, len(rep.tasks) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("score (task metric)")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    title = "Transfer results (Table 4 style)" + (" — MINI: intervals mean nothing" if rep.stats is not None
                                                   and rep.stats.mini else "")
    ax.set_title(title + ("; hatched = paper's Table 4" if rep.paper_rows else ""), fontsize=10)
    return fig


def to_png(rep: Report) -> bytes:
    import matplotlib.pyplot as plt

    fig = chart(rep)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # "tight": the outside legend is kept whole
    plt.close(fig)
    return buf.getvalue()


def write_report(rep: Report, out_dir: str | Path, name: str = "report") -> dict[str, Path]:
    """report.md / .csv / .json / .png in ``out_dir``, each replaced atomically."""
    from rs_transfer.studies.tables import write_report_files

    return write_report_files(Path(out_dir) / name, markdown=to_markdown(rep), csv_text=to_csv(rep),
                              data=rep.to_dict(), png=to_png(rep))
