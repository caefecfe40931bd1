# The last rule: tables, figures, the HTML page and summary.json from every finished run (bml/report.py).
# It waits for the whole training matrix; on a partial matrix (a failed cell under --keep-going) run
# `bml report` by hand: missing cells show as "—" with a note.


rule report:
    output:
        html=f"{LAYOUT.report_dir}/index.html",
        summary=f"{LAYOUT.report_dir}/summary.json",
    input:
        [f"{cell.run_dir}/metrics.json" for cell in PLAN.cells],
        f"{workflow.basedir}/params/published.yaml",
        code("report"),
    params:
        values=digest(PLAN.report_values()),
    log:
        "logs/report.log",
    benchmark:
        "logs/report.benchmark.tsv"
    shell:
        "bml report {PLANNED} > {log} 2>&1"
