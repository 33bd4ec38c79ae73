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


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    aligns = ["---:" if rows and all(_numeric(str(r[i])) for r in rows) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "", 1).replace("%", "").replace("-", "", 1).strip().isdigit()
