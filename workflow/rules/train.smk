# Training: one job per (dataset, protocol, fusion, method, seed) cell, through `bml train`, which
# resumes from the cell's last checkpoint by itself. Only metrics.json (written last) is the output, so a
# failed or killed job never makes Snakemake delete its checkpoints: rerunning it continues the run.


rule train:
    input:
        train_inputs,
    output:
        metrics=os.path.join(RUN_DIR, "metrics.json"),
    wildcard_constraints:
        seed=r"\d+",
        fusion=r"[a-z_]+",
        method=r"[a-z_]+",
    params:
        params_dir=f"{workflow.basedir}/params",
    threads: 1
    resources:
        gpu=GPUS_PER_RUN,
    log:
        "logs/train/{dataset}/{protocol}/{fusion}/{method}/seed{seed}.log",
    benchmark:
        "logs/train/{dataset}/{protocol}/{fusion}/{method}/seed{seed}.benchmark.tsv"
    shell:
        "bml train --dataset {wildcards.dataset} --protocol {wildcards.protocol} --method {wildcards.method}"
        " --fusion {wildcards.fusion} --seed {wildcards.seed} --threads {threads} --params-dir {params.params_dir}"
        " > {log} 2>&1"
