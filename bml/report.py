"""The report: every table (Markdown, LaTeX, CSV), every figure (PNG, PDF), one HTML page, summary.json.

`build_report` reads the finished runs under results/ (bml/results.py), builds the tables (bml/tables.py)
and figures (bml/figures.py) and writes them under reports/:

    reports/index.html              the page a researcher reads: the scorecard first, then tables and figures
    reports/scorecard.md            the scorecard (bml/scorecard.py): verdicts, selection, cost, ranking
    reports/tables/<name>.{md,tex,csv}, <name> one of
        scorecard, selection_<dataset>_<protocol>_<fusion>, cost_<dataset>_<protocol>_<fusion>, ranking,
        main_<protocol>_<fusion>, imbalance_<dataset>_<protocol>_<fusion>,
        stats_<metric>_<dataset>_<protocol>_<fusion> (metric: acc and probe_<m> of every modality),
        published_<source id in params/published.yaml>
    reports/figures/<dataset>_<protocol>_<fusion>_<figure>.{png,pdf}, <figure> one of bml.figures.FIGURES
    reports/summary.json            a DVC metrics file (`dvc metrics diff` compares two commits' results and
                                    verdicts)

`output_names` lists these files from the plan alone, for a workflow that declares them.

Missing or partial runs and unreadable metrics files are listed in the tables' notes and on the page;
the report is still built. So is a metric that is NaN or infinite in one finished run: that value is left
out (the cell shows one seed fewer) and named on the page, the run's other numbers are kept.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

from bml.figures import FIGURES, all_figures, captions
from bml.modalities import modalities_of
from bml.results import HISTORY, METRICS, Run, by_seed, load_runs
from bml.scorecard import Claims, scorecard_tables, verdict_summary
from bml.selection import selection_summary
from bml.table_format import Table, to_csv, to_latex, to_markdown
from bml.table_rows import Settings, comparison, table_runs
from bml.tables import build_tables, stats_keys

TABLE_FORMATS = ("md", "tex", "csv")
FIGURE_FORMATS = ("png", "pdf")


def drop_non_finite(runs: list[Run]) -> list[str]:
    """Leave out every NaN or infinite number of the runs' test metrics and history (a diverged evaluation
    must not stop the report of every other run); one line per file and key left out."""
    problems = []
    for run in runs:
        for which, metrics in run.test.items():
            if not isinstance(metrics, dict):
                continue
            bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
            for key in bad:
                problems.append(
                    f"{run.path / METRICS}: test.{which}.{key} is {metrics.pop(key)}; left out of the report"
                )
        bad_columns = set()
        for row in run.history:
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            bad_columns |= set(bad)
            for key in bad:
                del row[key]
        if bad_columns:
            problems.append(f"{run.path / HISTORY}: non-finite values in {sorted(bad_columns)}; those epochs left out")
    return problems


def summary(runs: list[Run], settings: Settings) -> dict:
    """{dataset/protocol/fusion/method: {metric_mean, metric_std, n_seeds, and vs the baseline: diff, p, p_holm}}.

    Metrics: acc, macro_f1 and probe_<m> of every modality of the dataset; compared with the baseline: acc and
    every probe_<m> (avdigits: acc_mean, probe_visual_mean, probe_visual_diff_vs_joint, probe_audio_p_vs_joint...).
    """
    out: dict[str, dict] = {}
    cells = sorted({r.cell for r in runs})
    modalities = {d: modalities_of([r for r in runs if r.dataset == d]) for d in {c[0] for c in cells}}
    for cell in cells:
        entry: dict[str, float | int | None] = {}
        for key in ("acc", "macro_f1", *(f"probe_{m}" for m in modalities[cell[0]])):
            values = list(by_seed(runs, cell, key, settings.which).values())
            if values:
                entry[f"{key}_mean"] = round(float(np.mean(values)), 3)
                entry[f"{key}_std"] = round(float(np.std(values, ddof=1)), 3) if len(values) > 1 else None
        entry["n_seeds"] = sum(r.cell == cell for r in runs)
        out["/".join(cell)] = entry
    for dataset, protocol, fusion in sorted({c[:3] for c in cells if c[2] != "none"}):
        for key in stats_keys(table_runs(runs, dataset, protocol, fusion)):
            for method, res in comparison(runs, dataset, protocol, fusion, key, settings).items():
                if res.get("baseline") or res["paired"]["p"] is None:
                    continue
                target = out["/".join((dataset, protocol, fusion, method))]
                target[f"{key}_diff_vs_{settings.baseline}"] = round(res["paired"]["mean_diff"], 3)
                target[f"{key}_p_vs_{settings.baseline}"] = round(res["paired"]["p"], 5)
                target[f"{key}_p_holm_vs_{settings.baseline}"] = round(res["p_holm"], 5)
    return out


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, text in enumerate(row):
            text = html.escape(text)
            if (i, j) in table.links:
                text = f'<a href="#{table.links[(i, j)]}">{text}</a>'
            cells.append(f"<td><b>{text}</b></td>" if (i, j) in table.bold else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    links = " · ".join(f'<a href="tables/{table.name}.{ext}">{ext}</a>' for ext in ("md", "tex", "csv"))
    return (
        f'<section class="table" id="{table.name}"><h3>{html.escape(table.title)}</h3>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<ol class="notes">{notes}</ol><p class="links">{links}</p></section>'
    )


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}thead{border-top:2px solid #222;border-bottom:1px solid #222}
tbody{border-bottom:2px solid #222}.notes{font-size:.8em;color:#444}figure{margin:1.5em 0}
img{max-width:100%}figcaption{font-size:.9em;color:#333}.problems{color:#a00}"""


def write_page(
    path: Path,
    tables: list[Table],
    figures: dict[str, dict[str, tuple[list[Path], str]]],
    problems: list[str],
    n_runs: int,
    scorecard: list[Table] = (),
) -> None:
    """index.html, the scorecard's section first; `figures` is {group heading: {figure name: (its files, its
    caption)}}."""
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>bml report</title>'
        f"<style>{STYLE}</style></head><body><h1>bml report</h1>",
        f"<p>{n_runs} finished runs. Tables: Markdown, LaTeX (booktabs) and CSV under <code>tables/</code>; "
        "figures: PNG and PDF under <code>figures/</code>.</p>",
    ]
    parts.append('<section id="scorecard"><h2>Reproduction scorecard</h2>')
    parts += [_table_html(t) for t in scorecard]
    parts.append("</section>")
    if problems:
        parts.append(
            '<section class="problems"><h2>Problems</h2><ul>'
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems)
            + "</ul></section>"
        )
    parts.append("<h2>Tables</h2>")
    parts += [_table_html(t) for t in tables]
    parts.append("<h2>Figures</h2>")
    for group, by_name in figures.items():
        parts.append(f"<h3>{html.escape(group)}</h3>")
        for name, (files, caption) in by_name.items():
            png = next((f for f in files if f.suffix == ".png"), None)
            if png is None:
                continue
            rel = png.relative_to(path.parent).as_posix()
            pdf = png.with_suffix(".pdf").relative_to(path.parent).as_posix()
            parts.append(
                f'<figure id="{html.escape(png.stem)}"><img src="{rel}" alt="{html.escape(name)}">'
                f"<figcaption>{html.escape(caption)} "
                f'(<a href="{pdf}">pdf</a>)</figcaption></figure>'
            )
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts))


def figure_groups(runs: list[Run]) -> list[tuple[str, str, str]]:
    """(dataset, protocol, fusion) of every trained multimodal cell: one set of figures each."""
    return sorted({r.cell[:3] for r in runs if r.fusion != "none"})


def output_names(groups: list[tuple[str, str, str, list[str]]], published_ids: list[str]) -> list[str]:
    """Every file a complete report writes, relative to its out_dir, from (dataset, protocol, fusion, modalities)
    of each trained group and the published sources' ids: what a workflow can declare before any run exists.

    Mirrors build_tables and all_figures; tests/test_tables.py checks that build_report writes exactly these.
    """
    tables = ["scorecard", "ranking"]
    tables += [f"{kind}_{d}_{p}_{f}" for d, p, f, _ in sorted(groups) for kind in ("selection", "cost")]
    tables += [f"main_{p}_{f}" for p, f in sorted({(p, f) for _, p, f, _ in groups})]
    for dataset, protocol, fusion, modalities in sorted(groups):
        keys = ["acc"] + [f"probe_{m}" for m in modalities]
        tables += [f"imbalance_{dataset}_{protocol}_{fusion}", f"robustness_{dataset}_{protocol}_{fusion}"]
        tables += [f"stats_{k}_{dataset}_{protocol}_{fusion}" for k in keys]
    tables += [f"published_{sid}" for sid in published_ids]
    names = ["index.html", "summary.json", "scorecard.md", "fingerprints.json"] + [
        f"tables/{t}.{ext}" for t in tables for ext in TABLE_FORMATS
    ]
    names += [
        f"figures/{d}_{p}_{f}_{kind}.{ext}"
        for d, p, f, _ in sorted(groups)
        for kind in FIGURES
        for ext in FIGURE_FORMATS
    ]
    return names


def build_report(
    results_root: str | Path,
    out_dir: str | Path,
    published: dict,
    settings: Settings,
    log=print,
    only: set[str] | None = None,
    claims: Claims | None = None,
) -> dict:
    """Write every table, figure, the page and summary.json; returns the summary. `only`: the run directories
    to report (the plan's cells), so that runs of another matrix left under results_root stay out of its tables
    and its Holm families; None reports every run found. `claims`: bml.scorecard.load_claims (none: the
    scorecard has no verdicts)."""
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    runs, problems = load_runs(results_root, only)
    problems += drop_non_finite(runs)
    for problem in problems:
        log(f"warning: {problem}")
    groups = figure_groups(runs)
    modalities = {d: modalities_of([r for r in runs if r.dataset == d]) for d in {g[0] for g in groups}}
    card, judged = scorecard_tables(runs, published, claims or Claims([]), settings, groups, modalities)
    (out / "scorecard.md").write_text(
        "# Reproduction scorecard\n\n" + "\n".join(to_markdown(t, folder="tables/") for t in card)
    )
    tables = build_tables(runs, published, settings, problems)
    for table in card + tables:
        for ext, render in zip(TABLE_FORMATS, (to_markdown, to_latex, to_csv), strict=True):
            (out / "tables" / f"{table.name}.{ext}").write_text(render(table))
    figures = {}
    for dataset, protocol, fusion in figure_groups(runs):
        group = table_runs(runs, dataset, protocol, fusion)
        written = all_figures(group, out / "figures", f"{dataset}_{protocol}_{fusion}", settings)
        texts = captions(modalities_of(group))
        figures[f"{dataset}, protocol {protocol}, fusion {fusion}"] = {
            name: (paths, texts[name]) for name, paths in written.items()
        }
    write_page(out / "index.html", tables, figures, problems, len(runs), card)
    result = summary(runs, settings) | verdict_summary(judged) | selection_summary(runs, groups, settings)
    (out / "summary.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    log(
        f"report: {len(runs)} runs, {len(judged)} claims, {len(card) + len(tables)} tables, "
        f"{sum(len(v) for v in figures.values())} figures -> {out / 'index.html'}"
    )
    return result
