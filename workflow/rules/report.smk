# The last rule: tables, figures, the HTML page and summary.json from every finished run (bml/report.py).
# It waits for the whole training matrix; on a partial matrix (a failed cell under --keep-going) run
# `bml report` by hand: missing cells show as "—" with a note.


rule report:
    input:
        train_targets(),
        published=f"{workflow.basedir}/params/published.yaml",
    output:
        html=f"{REPORT}/index.html",
        summary=f"{REPORT}/summary.json",
    params:
        params_dir=f"{workflow.basedir}/params",
        results=RESULTS,
        out=REPORT,
    log:
        "logs/report.log",
    benchmark:
        "logs/report.benchmark.tsv"
    shell:
        "bml report --params-dir {params.params_dir} --results-root {params.results} --out {params.out} > {log} 2>&1"
