"""``rs-transfer report DIR...``: results.json files -> Table 4-style report (Markdown, CSV, JSON, PNG)."""
from __future__ import annotations

import argparse

HELP = "gather results.json files into a Table 4-style report"
DESCRIPTION = """Gather every results.json under the given folders into one report: rows = backbone / weights
(/ protocol), columns = tasks, each cell the mean over seeds with its 95 % interval (bootstrap over the test
samples kept in each run's eval_outputs.npz, recomputing the metric), paired differences to a baseline row with
permutation p-values and Benjamini-Hochberg adjusted p-values (--alpha), and optionally the paper's own Table 4
as reference rows. Writes report.md, report.csv, report.json and report.png (atomically), and with --html
report.html, one self-contained page (no network) to open in a browser.
Unreadable results.json files and duplicate runs (same row, task and seed) are not counted; they are listed in the
report ("Not counted") and on the console.

examples:
  rs-transfer report work_dirs/ --paper
  rs-transfer report studies/t4 --html            # then open studies/t4/report.html
  rs-transfer report studies/t4 --baseline resnet152.tv_in1k --alpha 0.05 --out reports/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", help="folders (searched recursively) or results.json files")
    p.add_argument("--out", help="output folder (default: the first DIR)")
    p.add_argument("--name", default="report", help="file name stem (default: report)")
    p.add_argument("--tasks", nargs="+", help="columns, in order (default: the Table 4 tasks + any others found)")
    p.add_argument("--baseline", help="row to compute differences against: a weights label or a full row label")
    p.add_argument("--paper", action="store_true", help="add the paper's Table 4 rows (results/paper_table4.json)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level for differences to --baseline, after the Benjamini-Hochberg "
                        "correction over the table (default 0.05)")
    p.add_argument("--resamples", type=int, default=None,
                   help="bootstrap and permutation resamples (default 1000)")
    p.add_argument("--no-intervals", dest="intervals", action="store_false",
                   help="skip intervals and tests (mean ± std only; fast)")
    p.add_argument("--html", action="store_true",
                   help="also write NAME.html: one self-contained page (opens offline) with sortable tables, the "
                        "figures, every run's details and warnings for mini, stale and other-commit runs")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rs_transfer.errors import UserError
    from rs_transfer.studies.report import build_report, to_markdown, write_report

    for d in args.dirs:
        if not Path(d).exists():
            raise UserError(f"{d} does not exist")
    if args.tasks:
        from rs_transfer.tasks import get_task, TaskNotAvailable

        for t in args.tasks:
            try:
                get_task(t)
            except TaskNotAvailable:
                pass
    if args.resamples is not None and args.resamples < 100:
        raise UserError(f"--resamples {args.resamples} is too few for a 95 % interval; use 1000 or more")
    rep = build_report(args.dirs, tasks=args.tasks, baseline=args.baseline, paper=args.paper, alpha=args.alpha,
                       intervals=args.intervals, resamples=args.resamples)
    out = Path(args.out or (args.dirs[0] if Path(args.dirs[0]).is_dir() else Path(args.dirs[0]).parent))
    files = write_report(rep, out, args.name)
    if args.html:
        from rs_transfer.studies.htmlpage import write_table4_html

        files["html"] = write_table4_html(rep, out, args.name, args.dirs)
    print(to_markdown(rep))
    print("written: " + ", ".join(str(p) for p in files.values()))
    if rep.unreadable or rep.duplicates:  # also in the report's "Not counted" section; said last, where it is seen
        import sys

        print(f"rs-transfer report: warning: {len(rep.unreadable)} unreadable and {len(rep.duplicates)} duplicate "
              "results.json not counted:", file=sys.stderr)
        for line in rep.skipped_lines():
            print(f"  {line}", file=sys.stderr)
    return 0
