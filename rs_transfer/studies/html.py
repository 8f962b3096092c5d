"""One self-contained ``report.html``: tables, figures, warnings and the details of every run, in one file.

Why one file with everything inlined: a report is opened from a results folder, a shared drive or an e-mail
attachment, often offline. The page therefore loads nothing: no CDN, no font, no script or image from elsewhere
(the browser test in tests/test_report_html.py checks that no request leaves the page). Figures are matplotlib
SVG written into the page (:mod:`rs_transfer.studies.htmlplots`), the only script is the ~40 lines of sorting
below, and the style sheet is inline.

This module only renders: a :class:`Page` (built from results files by :mod:`rs_transfer.studies.htmlpage`) ->
HTML text. Every value is escaped; links to run folders are relative to the page, so a copied results folder
keeps working.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class HCell:
    """One table cell: the text shown, the key it sorts by (numbers sort as numbers; None sorts last), the runs it
    came from (anchors of the run details) and visible flags (``mini``, ``stale``, ``other commit``)."""

    text: str
    sort: float | str | None = None
    runs: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    title: str = ""
    emphasis: bool = False          # reference rows (the paper's numbers): italic


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[HCell]]
    note: str = ""


@dataclass
class RunInfo:
    """What the page says about one run: its anchor, a one-line title, the facts (label -> text), links
    (label -> relative href), the resolved config as JSON (shown collapsed) and its warning flags."""

    anchor: str
    title: str
    facts: list[tuple[str, str]]
    links: list[tuple[str, str]]
    config: str
    flags: list[str] = field(default_factory=list)


@dataclass
class Page:
    title: str
    subtitle: str = ""
    warnings: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)     # (caption, inline <svg>)
    runs: list[RunInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_counted: list[str] = field(default_factory=list)


FLAG_TEXT = {"mini": "mini preset: generated data, a smoke test, not a benchmark number",
             "stale": "stale: the study would run this cell again (its recorded configuration differs)",
             "other-commit": "computed by another commit of the code than the current one"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
main{max-width:1400px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 14px}
.warn{background:#fff4d6;border:1px solid #e8c35a;border-radius:6px;padding:8px 12px;margin:8px 0}
.warn b{color:#8a5a00}
table.results{border-collapse:collapse;background:#fff;border:1px solid #d8dce3;margin:6px 0 4px;font-variant-numeric:tabular-nums}
table.results th,table.results td{padding:5px 10px;border-bottom:1px solid #eceef2;text-align:right;white-space:nowrap}
table.results th:first-child,table.results td:first-child{text-align:left}
table.results th{white-space:normal;vertical-align:bottom;background:#eef1f6;cursor:pointer;user-select:none;position:sticky;top:0}
table.results th:hover{background:#e1e6ef}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
table.results tr:hover td{background:#f3f6fb}
td.ref{font-style:italic;color:#5b6475}
td a{color:#1f5fbf;text-decoration:none}td a:hover{text-decoration:underline}
.flag{display:inline-block;font-size:11px;border-radius:3px;padding:0 4px;margin-left:4px;background:#ffe08a;color:#5c4200}
.flag.stale{background:#f7b6b6;color:#6b0000}.flag.other-commit{background:#d9c8f5;color:#3b1d73}
.tablewrap{overflow-x:auto;max-width:100%}
.note{color:#5b6475;font-size:13px;margin:2px 0 10px}
figure{background:#fff;border:1px solid #d8dce3;border-radius:6px;margin:10px 0;padding:8px;overflow-x:auto}
figure svg{max-width:100%;height:auto}figcaption{color:#5b6475;font-size:13px}
details.run{background:#fff;border:1px solid #d8dce3;border-radius:6px;margin:6px 0;padding:6px 12px}
details.run:target{outline:2px solid #1f5fbf}
details.run summary{cursor:pointer;font-weight:600}
dl.facts{display:grid;grid-template-columns:220px 1fr;gap:2px 12px;margin:8px 0}
dl.facts dt{color:#5b6475}dl.facts dd{margin:0;word-break:break-all}
pre{background:#f3f4f7;padding:8px;overflow:auto;max-height:420px;font-size:12px}
ul.skipped li{font-family:ui-monospace,monospace;font-size:12px}
"""

# Click a header: sort that column (numbers as numbers, empty cells last), again to reverse. Opening a run's link
# also opens its collapsed details.
JS = """
(function(){
function key(td){var v=td.getAttribute('data-sort');if(v===null||v==='')return null;var n=Number(v);return isNaN(n)?v:n;}
function sortBy(th){var table=th.closest('table');var body=table.tBodies[0];var col=th.cellIndex;
 var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
 table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});th.setAttribute('aria-sort',dir);
 var rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
  if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
  var c=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
  return dir==='ascending'?c:-c;});
 rows.forEach(function(r){body.appendChild(r);});}
document.querySelectorAll('table.results th').forEach(function(th){th.addEventListener('click',function(){sortBy(th);});});
function openTarget(){var id=decodeURIComponent(location.hash.slice(1));var el=id&&document.getElementById(id);
 if(el&&el.tagName==='DETAILS'){el.open=true;}}
window.addEventListener('hashchange',openTarget);openTarget();
})();
"""


def e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _flags(flags: list[str]) -> str:
    return "".join(f'<span class="flag {e(f)}" title="{e(FLAG_TEXT.get(f, f))}">{e(f)}</span>' for f in flags)


def _cell(c: HCell) -> str:
    sort = "" if c.sort is None else (repr(float(c.sort)) if isinstance(c.sort, (int, float)) else str(c.sort))
    text = e(c.text)
    if c.runs:
        text = f'<a href="#{e(c.runs[0])}">{text}</a>'
        if len(c.runs) > 1:   # every seed's run reachable from its cell
            text += " " + " ".join(f'<a href="#{e(r)}"><sup>{i + 1}</sup></a>' for i, r in enumerate(c.runs))
    cls = ' class="ref"' if c.emphasis else ""
    title = f' title="{e(c.title)}"' if c.title else ""
    return f'<td{cls}{title} data-sort="{e(sort)}">{text}{_flags(c.flags)}</td>'


def render_table(t: Table, index: int) -> str:
    head = "".join(f'<th scope="col">{e(c)}</th>' for c in t.columns)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return (f'<h2>{e(t.title)}</h2>\n<div class="tablewrap"><table class="results" id="table-{index}">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>\n{note}")


def render_run(r: RunInfo) -> str:
    facts = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in r.facts)
    links = " · ".join(f'<a href="{e(href)}">{e(label)}</a>' for label, href in r.links)
    return (f'<details class="run" id="{e(r.anchor)}"><summary>{e(r.title)}{_flags(r.flags)}</summary>\n'
            f'<dl class="facts">{facts}<dt>files</dt><dd>{links or "none found"}</dd></dl>\n'
            f"<details><summary>resolved config</summary><pre>{e(r.config)}</pre></details></details>")


def render(page: Page) -> str:
    """The whole page as one HTML string (UTF-8, no external reference)."""
    parts = [f"<h1>{e(page.title)}</h1>"]
    if page.subtitle:
        parts.append(f'<p class="sub">{e(page.subtitle)}</p>')
    parts += [f'<div class="warn" role="alert"><b>Warning:</b> {e(w)}</div>' for w in page.warnings]
    parts += [render_table(t, i) for i, t in enumerate(page.tables)]
    parts += [f'<p class="note">{e(n)}</p>' for n in page.notes]
    if page.not_counted:
        parts.append(f"<h2>Not counted ({len(page.not_counted)})</h2><ul class=\"skipped\">"
                     + "".join(f"<li>{e(s)}</li>" for s in page.not_counted) + "</ul>")
    if page.figures:
        parts.append("<h2>Figures</h2>")
        parts += [f"<figure>{svg}<figcaption>{e(cap)}</figcaption></figure>" for cap, svg in page.figures]
    if page.runs:
        parts.append(f"<h2>Runs ({len(page.runs)})</h2>")
        parts += [render_run(r) for r in page.runs]
    # Content-Security-Policy: even a stray reference could not load anything (default-src 'none').
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            '<meta name="viewport" content="width=device-width,initial-scale=1">\n'
            f"<title>{e(page.title)}</title>\n<style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(parts) + f"\n</main>\n<script>{JS}</script>\n</body></html>\n")


def write_html(page: Page, path: str | Path) -> Path:
    """Write the page atomically (an open browser tab never reads half a file)."""
    from rs_transfer.atomic import write_bytes_atomic

    return write_bytes_atomic(Path(path), render(page).encode("utf-8"))


def config_text(config: Any) -> str:
    return json.dumps(config, indent=1, sort_keys=True, default=str)
