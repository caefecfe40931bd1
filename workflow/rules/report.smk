# The last rule: tables, figures, the HTML page and summary.json from every finished run (bml/report.py).
# It waits for the whole training matrix; on a partial matrix (a failed cell under --keep-going) run
# `bml report` by hand: missing cells show as "—" with a note.
from bml.scorecard import load_claims

load_claims(PARAMS)  # params/claims.yaml checked when the workflow parses: a bad claim stops it before any job


rule report:
    output:
        html=report(LAYOUT.report("index.html"), category="Report", caption="../report/page.rst"),
        summary=LAYOUT.report("summary.json"),
        tables=report(directory(LAYOUT.report("tables")), patterns=["{name}.md"], category="Tables",
                      caption="../report/tables.rst"),
        figures=report(directory(LAYOUT.report("figures")), patterns=["{name}.png"], category="Figures",
                       caption="../report/figures.rst"),
    input:
        [cell.metrics for cell in PLAN.cells],
        here(["params/published.yaml", "params/claims.yaml"]),
        code("report"),
    params:
        values=digest(PLAN.report_values()),
    log:
        "logs/report.log",
    benchmark:
        "logs/report.benchmark.tsv"
    shell:
        "bml report {PLANNED} > {log} 2>&1"
