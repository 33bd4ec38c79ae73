"""The Markdown report: run facts, one table per model, harness overhead and the course table."""
from __future__ import annotations

from fwbench.harness.reporting import tables
from fwbench.harness.reporting.course import course_table
from fwbench.harness.reporting.scaling import scaling_tables
from fwbench.harness.table import markdown_table, md_cell


def table_md(table: tables.Table, level: int = 3) -> str:
    """A heading, a GitHub table (bold best values, failed rows carry their error) and the note."""
    width = len(table.headers)
    rows = [[row.cells[0], f"failed: {row.error}"] + [""] * (width - 2) if row.error is not None
            else [f"**{t}**" if i in row.best else t for i, t in enumerate(row.cells)] for row in table.rows]
    lines = [f"{'#' * level} {table.title}", "",
             markdown_table(table.headers, rows, "l" + ("r" if table.right else "l") * (width - 1))]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def facts_line(results: dict) -> str:
    """The machine, software, commit, suite and date on one line."""
    return " · ".join(f"**{k}**: {md_cell(v)}" for k, v in tables.run_facts(results))


def run_md(results: dict, level: int = 2, baseline: str | None = None) -> str:
    """Every section for one results file."""
    parts = [facts_line(results), tables.EPOCH_NOTE, tables.VERDICT_NOTE]
    parts += [table_md(t, level) for t in tables.model_tables(results, baseline)]
    parts += [table_md(t, level) for t in tables.mode_tables(results)]
    parts += [table_md(t, level) for t in scaling_tables(results)]
    overhead = tables.overhead_table(results)
    if overhead:
        parts.append(table_md(overhead, level))
    parts += [table_md(t, level) for t in tables.conventions_tables(results)]
    parts.append(table_md(course_table(results), level))
    notes = tables.metric_notes(results)
    if notes:
        parts.append(f"{'#' * level} How each metric is measured\n\n"
                     + "\n".join(f"- `{name}` ({md_cell(text)})" for name, text in notes))
    return "\n\n".join(parts)


def render(runs: list[tuple[str, dict]], baseline: str | None = None) -> str:
    """The whole document; one section per results file when there are several."""
    if len(runs) == 1:
        name, results = runs[0]
        return f"# fwbench report: {name}\n\n{run_md(results, baseline=baseline)}\n"
    body = "\n\n".join(f"## {name}\n\n{run_md(results, 3, baseline)}" for name, results in runs)
    return f"# fwbench report\n\n{body}\n"
