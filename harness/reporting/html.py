"""The HTML report: one self-contained file, the Markdown report's tables plus embedded PNG figures."""
from __future__ import annotations

from html import escape

from fwbench.harness.reporting import heatmaps, plots, tables
from fwbench.harness.reporting.course import course_table
from fwbench.harness.reporting.scaling import scaling_tables

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .3em .7em; border-bottom: 1px solid #e4e4e4; white-space: nowrap; }
th { background: #f3f3f3; text-align: left; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #fafafa; }
td.best { font-weight: 700; background: #e8f4e8; }
td.error { color: #a40000; white-space: normal; }
p.note, p.skip { color: #555; font-size: .92em; max-width: 60em; }
p.skip { font-style: italic; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def table_html(table: tables.Table, level: int = 2) -> str:
    """A heading, the table (best values bold, failed rows spanning with their error) and the note."""
    num = " class=\"num\"" if table.right else ""
    head = "".join(f"<th{num if i else ''}>{escape(h)}</th>" for i, h in enumerate(table.headers))
    body = []
    for row in table.rows:
        label = f"<td>{escape(row.cells[0])}</td>"
        if row.error is not None:
            cells = f"<td class=\"error\" colspan=\"{len(table.headers) - 1}\">failed: {escape(row.error)}</td>"
        else:
            cells = "".join(_td(text, table.right, i in row.best) for i, text in enumerate(row.cells) if i)
        body.append(f"<tr>{label}{cells}</tr>")
    note = f"<p class=\"note\">{escape(table.note)}</p>" if table.note else ""
    return (f"<h{level}>{escape(table.title)}</h{level}>\n<div class=\"scroll\"><table><thead><tr>{head}</tr>"
            f"</thead>\n<tbody>\n" + "\n".join(body) + f"\n</tbody></table></div>\n{note}")


def _td(text: str, right: bool, best: bool) -> str:
    classes = " ".join(c for c, on in (("num", right), ("best", best)) if on)
    return f"<td class=\"{classes}\">{escape(text)}</td>" if classes else f"<td>{escape(text)}</td>"


def figure_html(plot: plots.Plot, alt: str) -> str:
    """An embedded image, or the note saying why there is none."""
    uri, note = plot
    if uri is None:
        return f"<p class=\"skip\">{escape(note)}</p>"
    return f"<figure><img src=\"{uri}\" alt=\"{escape(alt)}\"></figure>"


def run_html(results: dict, level: int = 2, baseline: str | None = None) -> str:
    """Every section for one results file."""
    h, names = f"h{level}", tables.models_in(results)
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in tables.run_facts(results))
    parts = [f"<dl class=\"facts\">{facts}</dl>", f"<p class=\"note\">{escape(tables.EPOCH_NOTE)}</p>",
             f"<p class=\"note\">{escape(tables.VERDICT_NOTE)}</p>"]
    parts += [table_html(t, level) for t in tables.model_tables(results, baseline)]
    parts += [table_html(t, level) for t in tables.mode_tables(results)]
    parts += [table_html(t, level) for t in scaling_tables(results)]
    parts += [f"<{h}>Training loss</{h}>", figure_html(plots.loss_curves(results), "training loss curves"),
              f"<{h}>Throughput</{h}>", figure_html(plots.throughput(results), "images per second")]
    parts.append(f"<{h}>Where the backends disagree</{h}>")
    parts += [figure_html(heatmaps.agreement(results, m), f"{m} agreement heatmap") for m in names]
    parts.append(f"<{h}>Learned first-layer filters</{h}>")
    parts += [figure_html(heatmaps.filters(results, m), f"{m} first-layer filters") for m in names]
    overhead = tables.overhead_table(results)
    if overhead:
        parts.append(table_html(overhead, level))
    parts += [table_html(t, level) for t in tables.conventions_tables(results)]
    parts.append(table_html(course_table(results), level))
    notes = tables.metric_notes(results)
    if notes:
        items = "".join(f"<li><code>{escape(n)}</code> ({escape(t)})</li>" for n, t in notes)
        parts.append(f"<{h}>How each metric is measured</{h}><ul>{items}</ul>")
    return "\n".join(parts)


def render(runs: list[tuple[str, dict]], baseline: str | None = None) -> str:
    """The whole document, with no external references: inline CSS, images as data URIs."""
    if len(runs) == 1:
        title, body = f"fwbench report: {runs[0][0]}", run_html(runs[0][1], baseline=baseline)
    else:
        title = "fwbench report"
        body = "\n".join(f"<section><h2>{escape(name)}</h2>\n{run_html(results, 3, baseline)}</section>"
                         for name, results in runs)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
            f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n")
