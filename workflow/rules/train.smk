# Training: one job per cell of the plan, through `bml train --cell`, which resumes from the cell's last
# checkpoint by itself. Only metrics.json (written last) is the output, so a failed or killed job never
# makes Snakemake delete its checkpoints: rerunning it continues the run. The `values` param is the cell's
# hash: changing a value the cell depends on reruns it, and nothing else.


rule train:
    output:
        metrics=LAYOUT.metrics("{dataset}", "{protocol}", "{fusion}", "{method}", "{seed}"),
    input:
        packed=lambda w: [LAYOUT.packed(w.dataset, cell_of(w).recipe, f"{s}.npy") for s in SPLITS],
        required=lambda w: [PLAN.cell(r).metrics for r in cell_of(w).requires],
        code=lambda w: here(cell_of(w).code),
    wildcard_constraints:
        seed=r"\d+",
        fusion=r"[a-z_]+",
        method=r"[a-z0-9_]+",
    params:
        cell=lambda w: cell_of(w).name,
        values=lambda w: cell_of(w).hash,
    threads: 1
    resources:
        gpu=GPUS_PER_TRAIN_JOB,
    log:
        "logs/train/{dataset}/{protocol}/{fusion}/{method}/seed{seed}.log",
    benchmark:
        "logs/train/{dataset}/{protocol}/{fusion}/{method}/seed{seed}.benchmark.tsv"
    shell:
        "bml train --cell {params.cell} --threads {threads} {PLANNED} --expect-hash {params.values} > {log} 2>&1"
