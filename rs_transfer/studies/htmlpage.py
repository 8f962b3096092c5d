"""Building the report page (:class:`rs_transfer.studies.html.Page`) from what the reports already hold: the
Table 4 report (:func:`table4_page`) or a row study's report dict (Tables 1 and 5, the scaling study:
:func:`rows_page`), plus each counted run's results.json for its details.

Flags a reader must not miss, on the cell, on the run and as a banner on top:
- ``mini``: the run used the mini preset (generated data, a smoke test);
- ``stale``: the study found the run's recorded configuration differs from what it would run now, and could not
  run it again (``study.json`` marks such a cell ``"stale": true``): the number is an old configuration's;
- ``other-commit``: results.json was written by another commit of the code than the one writing the page (the
  config hash covers the configuration, not the code).
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rs_transfer.results import load_results
from rs_transfer.studies.html import HCell, Page, RunInfo, Table, config_text


def current_commit() -> str | None:
    from rs_transfer.studies.reuse import _current_commit

    return _current_commit()


def anchor_for(results: Path, page_dir: Path) -> str:
    """A stable anchor per run folder (its path relative to the page), safe in an id and a URL fragment."""
    try:
        rel = str(results.parent.resolve().relative_to(page_dir.resolve()))
    except ValueError:
        rel = str(results.parent.resolve())
    return "run-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", rel).strip("-") or "here")


def stale_paths(dirs: Iterable[str | Path]) -> set[Path]:
    """results.json files that a study marked stale in its ``study.json`` (see the module docstring)."""
    out: set[Path] = set()
    for d in map(Path, dirs):
        for sj in ([d / "study.json"] if d.is_dir() else []) + (sorted(d.rglob("*/study.json")) if d.is_dir() else []):
            try:
                cells = json.loads(sj.read_text()).get("cells") or []
            except (OSError, ValueError, AttributeError):
                continue
            out.update((Path(c["work_dir"]) / "results.json").resolve() for c in cells
                       if isinstance(c, dict) and c.get("stale") and c.get("work_dir"))
    return out


def run_flags(res: dict[str, Any], path: Path, stale: set[Path], now: str | None) -> list[str]:
    flags = ["mini"] if res.get("preset") == "mini" else []
    if path.resolve() in stale:
        flags.append("stale")
    then = (res.get("git") or {}).get("commit") if isinstance(res.get("git"), dict) else None
    if then and now and then != now:
        flags.append("other-commit")
    return flags


def _num(v: Any, unit: str = "", nd: int = 3) -> str:
    if v is None:
        return "not recorded"
    return f"{v:.{nd}g}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _newest(paths: Iterable[Path]) -> Path | None:
    found = sorted(paths, key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run_info(path: Path, res: dict[str, Any], page_dir: Path, anchor: str, flags: list[str],
             name: str = "") -> RunInfo:
    """The details of one run: everything a reader needs to trust or question its number (``name``: the study
    row it is, when the row label does not tell rows apart)."""
    import os
    from urllib.parse import quote

    from rs_transfer.studies.report import row_label, weights_label

    w = res.get("weights") if isinstance(res.get("weights"), dict) else {"source": res.get("weights")}
    norm = w.get("normalization") or {}
    skipped = res.get("skipped_files") or {}
    git = res.get("git") or {}
    facts = [
        ("task", f"{res.get('task_title') or res['task']} ({res['task']})"),
        ("result", f"{res['metric']} = {res['value']:.4g}"
                   + ("" if res.get("higher_is_better", True) else " (lower is better)")),
        ("all metrics", ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                  for k, v in (res.get("metrics") or {}).items())),
        ("protocol / preset / seed", f"{res.get('protocol', 'finetune')} / {res.get('preset', '?')} / "
                                     f"{res.get('seed', 0)}"),
        ("backbone", f"{res['backbone']} {json.dumps(res.get('backbone_kwargs') or {}, sort_keys=True)}"),
        ("weights", f"{weights_label(w)}: source {w.get('source') or 'none (random initialisation)'}"
                    + (f", file {w['path']}" if w.get("path") else "")),
        ("weights load", (", ".join(f"{k} {w[k]}" for k in ("layout", "wrapper", "named", "load", "load_report")
                                    if w.get(k) is not None) if w.get("source") else "") or "no weights loaded"),
        ("weights sha256", w.get("sha256") or "-"),
        ("normalisation", f"{norm.get('name', '?')}: mean {norm.get('mean')}, std {norm.get('std')} "
                          f"({norm.get('how', '')}{'; ' + norm['detail'] if norm.get('detail') else ''})"),
        ("global batch", f"{_num(res.get('global_batch_size'))} = {_num(res.get('per_process_batch_size'))} per "
                         f"process x {_num(res.get('world_size'))} process(es) x {_num(res.get('accumulation'))} "
                         f"accumulation; LR {_num(res.get('lr'))}"
                         + (f"; {res['optimizer_steps']} optimizer steps" if res.get("optimizer_steps") else "")),
        ("train / eval time", f"{_num(res.get('train_time_s'), ' s')} / {_num(res.get('eval_time_s'), ' s')} "
                              f"(wall {_num(res.get('wall_time_s'), ' s')}; "
                              f"{_num(res.get('train_images_per_s'), ' img/s')})"),
        ("skipped files", f"train {skipped.get('train', 0)}, eval {skipped.get('eval', 0)}"
                          + (f" (e.g. {', '.join(map(str, skipped['examples'][:3]))})" if skipped.get("examples")
                             else "")),
        ("device", f"{res.get('device', '?')}, launcher {res.get('launcher', '?')}, world size "
                   f"{res.get('world_size', '?')}" + (f", resumed from iteration {res['resumed_from']}"
                                                      if res.get("resumed_from") else "")),
        ("code commit", f"{git.get('commit') or 'unknown'}{' (uncommitted changes)' if git.get('dirty') else ''}"),
        ("config hash", str(res.get("config_hash") or "-")),
        ("row", row_label(res)),
    ]
    if res.get("note"):
        facts.append(("note", res["note"]))
    folder = path.parent
    found = [("results.json", path), ("work dir", folder),
             ("log", _newest(folder.glob("*/*.log"))), ("TensorBoard folder", _newest(folder.glob("*/vis_data"))),
             ("config file", _newest(folder.glob("*.py")))]
    # relative (a copied or shared results folder keeps working), percent-encoded (spaces, '#', '?' in names)
    links = [(label, quote(Path(os.path.relpath(p, page_dir)).as_posix())) for label, p in found if p is not None]
    title = (f"{name + ': ' if name else ''}{row_label(res)} · {res['task']} · seed {res.get('seed', 0)}: "
             f"{res['metric']} {res['value']:.2f}")
    return RunInfo(anchor, title, facts, links, config_text(res.get("config", {})), flags)


def _warnings(flags: dict[str, int], now: str | None, commits: set[str]) -> list[str]:
    out = []
    if flags.get("mini"):
        out.append(f"{flags['mini']} run(s) used the mini preset (flag 'mini'): generated data and a few "
                   "iterations, a smoke test of the machinery, not benchmark numbers.")
    if flags.get("stale"):
        out.append(f"{flags['stale']} run(s) are stale (flag 'stale'): the study would run them with another "
                   "configuration now, but could not; their numbers are from the old configuration.")
    if flags.get("other-commit"):
        out.append(f"{flags['other-commit']} run(s) were computed by another commit of the code "
                   f"({', '.join(sorted(c[:10] for c in commits))}; now {(now or '?')[:10]}); the configuration "
                   "is recorded, the code may differ (flag 'other-commit').")
    return out


def cell_text(c: dict[str, Any]) -> str:
    """mean ± std (n), and the confidence interval and significance mark when the report carries them."""
    if not c or c.get("mean") is None:
        return "—"
    from rs_transfer.studies.htmlplots import bounds

    s = f"{c['mean']:.2f}" + (f" ± {c['std']:.2f}" if c.get("std") is not None else "")
    b = bounds(c)
    if b is not None:
        s += f" [{b[0]:.2f}, {b[1]:.2f}]"
    s += f" (n={c['n']})" if c.get("n", 1) > 1 else ""
    return s + (f" {c['mark']}" if c.get("mark") else "")


def delta_text(c: dict[str, Any]) -> str:
    """A difference to the baseline: the paired difference with its interval, p (adjusted) and * when significant
    where the report computed them, else the plain difference of means."""
    if c.get("diff") is not None:
        s = f"{c['diff']:+.2f}"
        if c.get("diff_low") is not None and c.get("diff_high") is not None:
            s += f" [{c['diff_low']:+.2f}, {c['diff_high']:+.2f}]"
        p = c.get("p_adjusted", c.get("p_value"))
        return s + (f" p={p:.2g}" if p is not None else "") + (" *" if c.get("significant") else "")
    return "—" if c.get("delta") is None else f"{c['delta']:+.2f}"


def table4_page(rep: Any, page_dir: str | Path, dirs: Sequence[str | Path] = ()) -> Page:
    """The Table 4 report's page: its tables, chart and per-task plots, and every counted run."""
    from rs_transfer.studies.htmlplots import report_chart, task_chart
    from rs_transfer.studies.report import MISSING, row_label

    page_dir = Path(page_dir)
    data = rep.to_dict()
    now = current_commit()
    stale = stale_paths(dirs)
    runs: list[RunInfo] = []
    cell_runs: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    cell_flags: dict[tuple[str, str], set[str]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    commits: set[str] = set()
    for src in rep.sources:
        p = Path(src)
        res = load_results(p)
        key = (row_label(res), res["task"])
        flags = run_flags(res, p, stale, now)
        for f in flags:
            counts[f] += 1
        if "other-commit" in flags:
            commits.add(res["git"]["commit"])
        anchor = anchor_for(p, page_dir)
        cell_runs[key].append((int(res.get("seed", 0)), anchor))
        cell_flags[key].update(f for f in flags if f != "mini")
        runs.append(run_info(p, res, page_dir, anchor, flags))
    tasks = data["tasks"]
    lower = set(data["lower_is_better"])
    head = ["backbone / weights"] + [f"{data['titles'][t]} ({data['metrics'].get(t, '?')}"
                                     + (", lower better" if t in lower else "") + ")" for t in tasks]

    def link(label: str, t: str) -> list[str]:
        return [a for _, a in sorted(cell_runs.get((label, t), []))]

    rows = []
    for label, cells in data["rows"].items():
        row = [HCell(label, label, flags=["mini"] if label.endswith("[mini]") else [])]
        for t in tasks:
            c = cells.get(t) or {}
            row.append(HCell(cell_text(c), c.get("mean"), link(label, t), sorted(cell_flags.get((label, t), ())),
                             title=(f"seeds {c.get('seeds')}: {c.get('values')}"
                                    + (f"; {c['interval_note']}" if c.get("interval_note") else "")) if c
                             else "no result"))
        rows.append(row)
    for label, vals in data["paper"].items():
        rows.append([HCell(label, label, emphasis=True)] + [
            HCell(f"{vals[t]:.1f}" if t in vals else MISSING, vals.get(t), emphasis=True) for t in tasks])
    tables = [Table("Transfer results (Table 4 style)", head, rows,
                    "Mean ± sample std over seeds (n = seeds); [low, high] = confidence interval where computed; "
                    "— = no result." + (" Italic rows: the paper's Table 4." if data["paper"] else "")
                    + " Click a header to sort, a number for its run (superscripts: each seed's run).")]
    if data.get("baseline") and len(data["rows"]) > 1:
        drows = []
        for label, cells in data["rows"].items():
            if label == data["baseline"]:
                continue
            drows.append([HCell(label, label)] + [
                HCell(delta_text(cells.get(t) or {}), (cells.get(t) or {}).get("diff", (cells.get(t) or {}).get(
                    "delta")), link(label, t), title=(cells.get(t) or {}).get("diff_note", "")) for t in tasks])
        tables.append(Table(f"Difference to baseline: {data['baseline']}", head, drows,
                            "Paired difference [interval] and p adjusted for multiple comparisons (* = significant) "
                            "where the report computed them; else the difference of means."))
    figures = [("All tasks: the figure of report.png", report_chart(rep))]
    figures += [(f"{data['titles'][t]}: every row", task_chart(data, t)) for t in tasks
                if any((c.get(t) or {}).get("mean") is not None for c in data["rows"].values())]
    warnings = _warnings(counts, now, commits)
    if rep.unreadable or rep.duplicates:
        warnings.append(f"{len(rep.unreadable)} unreadable and {len(rep.duplicates)} duplicate results.json are not "
                        "counted (listed under 'Not counted').")
    return Page("Transfer results (Table 4 style)", f"{len(rep.sources)} runs from {', '.join(map(str, dirs))}",
                warnings, tables, figures, runs, not_counted=rep.skipped_lines())


STUDY_TITLES = {"table1": "Table 1: additive ImageNet study", "table5": "Table 5: additive Kinetics-400 study",
                "scaling": "Scaling study: ResNet-RS on ImageNet"}
LABELS = {"id": "id", "label": "row", "paper_top1": "top-1 (paper)", "paper_delta": "Δ (paper)", "top1": "top-1",
          "delta": "Δ", "top5": "top-5", "minival_top1": "minival top-1", "gflops": "GFLOPs",
          "train_time_s": "train time (s)", "train_images_per_s": "train img/s", "eval_time_s": "eval time (s)",
          "infer_ms_per_image": "infer ms/img", "train_time_missing": "train time missing"}


def _value_text(v: Any, key: str, row: dict[str, Any] | None = None) -> str:
    """A row-study cell; ``key_low``/``key_high`` (and ``delta_p`` for ``delta``) where the study computed them."""
    from rs_transfer.studies.htmlplots import bounds

    if v is None:
        return "-"
    b = bounds(row or {}, key) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if b is not None:
        p = (row or {}).get(f"{key}_p")
        f = "+.2f" if "delta" in key else ".4g"
        return f"{v:{f}} [{b[0]:{f}}, {b[1]:{f}}]" + (f" p={p:.2g}" if p is not None else "")
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:+.2f}" if "delta" in key else f"{v:.4g}"
    return str(v)


def rows_page(report: dict[str, Any], columns: Sequence[str], page_dir: str | Path) -> Page:
    """A row study's page: one table row per report row (every cell links to the row's run), its figures, and
    the details of every row's run (found through the row's ``work_dir``)."""
    from rs_transfer.studies.htmlplots import additive_chart, pareto_charts

    page_dir = Path(page_dir)
    now = current_commit()
    runs, rows = [], []
    counts: dict[str, int] = defaultdict(int)
    commits: set[str] = set()
    for r in report["rows"]:
        path = Path(str(r.get("work_dir") or "")) / "results.json"
        anchors, flags = [], ["mini"] if report.get("preset") == "mini" else []
        if r.get("work_dir") and path.is_file():
            res = load_results(path)
            flags = run_flags(res, path, set(), now)
            if "other-commit" in flags:
                commits.add(res["git"]["commit"])
            anchors = [anchor_for(path, page_dir)]
            runs.append(run_info(path, res, page_dir, anchors[0], flags, str(r.get("id") or r.get("label") or "")))
        for f in flags:
            counts[f] += 1
        rows.append([HCell(_value_text(r.get(c), c, r), r.get(c) if not isinstance(r.get(c), (list, dict)) else None,
                           anchors, flags if i == 0 else []) for i, c in enumerate(columns)])
    study = report.get("study", "study")
    title = STUDY_TITLES.get(study, study)
    figures = []
    if study == "scaling":
        figures = pareto_charts(report["rows"])
    elif any(r.get("top1") is not None for r in report["rows"]):
        figures = [("top-1 per row, ours and the paper's", additive_chart(report["rows"], title))]
    table = Table(title, [LABELS.get(c, c) for c in columns], rows,
                  "Click a header to sort, a cell for its run's details.")
    sub = f"preset {report.get('preset')}, backbone {report.get('backbone')}, seed {report.get('seed')}"
    return Page(title, sub, _warnings(counts, now, commits), [table], figures, runs,
                notes=[report["note"]] if report.get("note") else [])


def write_table4_html(rep: Any, out_dir: str | Path, name: str = "report",
                      dirs: Sequence[str | Path] = ()) -> Path:
    """``OUT_DIR/NAME.html`` for a Table 4 report (``dirs``: where its results came from; their study.json may mark
    stale runs), written atomically."""
    from rs_transfer.studies.html import write_html

    return write_html(table4_page(rep, out_dir, dirs or rep.sources), Path(out_dir) / f"{name}.html")


def write_rows_html(report: dict[str, Any], columns: Sequence[str], out: str | Path) -> Path:
    """``OUT.html`` for a row study (``out`` without suffix, as its other report files), written atomically."""
    from rs_transfer.studies.html import write_html

    out = Path(out)
    return write_html(rows_page(report, columns, out.parent), out.with_suffix(".html"))
