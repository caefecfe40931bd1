"""A result table and its three renderings: Markdown (the README and reports/), LaTeX (booktabs, for a
paper), CSV (for anything else). Bold cells and numbered notes carry over to each; a linked cell (the numbers
behind a verdict) is a link in Markdown and HTML, plain text elsewhere."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field


@dataclass
class Table:
    name: str  # file stem under reports/
    title: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells in bold
    notes: list[str] = field(default_factory=list)
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> the name of another table


def to_markdown(table: Table, folder: str = "") -> str:
    """`folder`: where the linked tables' .md files are, relative to this file ("" beside it)."""

    def cell(i: int, j: int, text: str) -> str:
        text = f"[{text}]({folder}{table.links[(i, j)]}.md)" if (i, j) in table.links else text
        return f"**{text}**" if (i, j) in table.bold else text

    lines = [
        f"### {table.title}",
        "",
        "| " + " | ".join(table.header) + " |",
        "|" + "|".join("---" for _ in table.header) + "|",
    ]
    lines += ["| " + " | ".join(cell(i, j, t) for j, t in enumerate(row)) + " |" for i, row in enumerate(table.rows)]
    lines += [""] + [f"{k + 1}. {note}" for k, note in enumerate(table.notes)]
    return "\n".join(lines) + "\n"


LATEX_SUBS = [
    ("\\", r"\textbackslash{}"),
    ("&", r"\&"),
    ("%", r"\%"),
    ("_", r"\_"),
    ("#", r"\#"),
    ("±", r"$\pm$"),
    ("—", "---"),
    ("↑", r"$^{\uparrow}$"),
    ("↓", r"$^{\downarrow}$"),
    ("Δ", r"$\Delta$"),
    ("≥", r"$\geq$"),
    ("<", r"$<$"),
    ("×", r"$\times$"),
]


def latex_escape(text: str) -> str:
    for old, new in LATEX_SUBS:
        text = text.replace(old, new)
    return text


def to_latex(table: Table) -> str:
    """A booktabs table (\\usepackage{booktabs}); notes as a footnote-sized paragraph under it."""

    def cell(i: int, j: int, text: str) -> str:
        text = latex_escape(text)
        return f"\\textbf{{{text}}}" if (i, j) in table.bold else text

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        f"\\caption{{{latex_escape(table.title)}}}",
        f"\\label{{tab:{table.name}}}",
        r"\begin{tabular}{l" + "r" * (len(table.header) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(cell(i, j, t) for j, t in enumerate(row)) + r" \\" for i, row in enumerate(table.rows)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += [
            r"\par\smallskip\footnotesize",
            " ".join(f"({k + 1}) {latex_escape(n)}" for k, n in enumerate(table.notes)),
        ]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    return out.getvalue()
