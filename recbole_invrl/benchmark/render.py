"""Plain tables as text: the one renderer of the benchmark table and the search tables."""
from __future__ import annotations

import csv
import io
from typing import Sequence


def markdown_cell(text: str) -> str:
    """``text`` on one line, with ``|`` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None,
                   preamble: str | None = None) -> str:
    """A Markdown table of already formatted cells (escaped here), after an optional
    ``# title`` and paragraph. Cells may carry Markdown emphasis (``**...**``)."""
    lines = [f"# {title}", ""] if title else []
    if preamble:
        lines += [preamble, ""]
    lines.append("| " + " | ".join(markdown_cell(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The same table as CSV (RFC 4180 quoting, ``\\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
