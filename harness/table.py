"""Plain-text and Markdown tables from rows of strings."""
from __future__ import annotations


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        out = []
        for cell, width in zip(cells, widths):
            cell = str(cell)
            out.append(cell.rjust(width) if _numeric(cell) else cell.ljust(width))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(headers: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table, cells escaped; align: "l" or "r" a column (default: numbers right)."""
    if align is None:
        align = "".join("r" if rows and all(_numeric(str(r[i])) for r in rows) else "l" for i in range(len(headers)))
    head, body = [md_cell(h) for h in headers], [[md_cell(c) for c in r] for r in rows]
    rules = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [head, rules, *body])


def md_cell(text: object) -> str:
    """Escape what would end a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "", 1).replace("%", "").replace("-", "", 1).strip().isdigit()
