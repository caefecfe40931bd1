# Training: one job per cell of the plan, through `bml train --cell`, which resumes from the cell's last
# checkpoint by itself. Only metrics.json (written last) is the output, so a failed or killed job never
# makes Snakemake delete its checkpoints: rerunning it continues the run (and a rerun of a finished cell,
# e.g. --forcerun, whose metrics.json Snakemake deleted first, trains it again: bml/train.py, resume). The
# `values` param is the cell's hash: changing a value the cell depends on reruns it, and nothing else.
#
# What a job needs is declared here, in the rule, not in profiles/slurm: Snakemake merges the rule's
# resources with --set-resources key by key, while a --set-resources on the command line replaces the
# profile's whole set-resources block, so `--set-resources train:mem_mb=64000` changes that value only.
# Locally these are limits only when asked (`--resources gpu=4`); under SLURM they become sbatch options.
TRAIN_RUNTIME_MIN = 720  # sbatch -t: ResNet18 protocols run 100 epochs on one GPU (an estimate, not measured)
TRAIN_MEM_MB = 32000  # sbatch --mem: room for 8 loader processes beside the model (an estimate, not measured;
# logs/train/**/*.benchmark.tsv gives max_rss after a first run)


# Both rules below run a cell the same way.
CELL_INPUT = dict(
    packed=lambda w: [LAYOUT.packed(w.dataset, cell_of(w).recipe, f"{s}.npy") for s in SPLITS],
    required=lambda w: [PLAN.cell(r).metrics for r in cell_of(w).requires],
    code=lambda w: here(cell_of(w).code),
)
CELL_PARAMS = dict(cell=lambda w: cell_of(w).name, values=lambda w: cell_of(w).hash)
CELL_LOG = "logs/train/{dataset}/{protocol}/{fusion}/{method}/seed{seed}"
CELL_COMMAND = (
    "bml train --cell {params.cell} --threads {threads} --gpus {resources.gpu} {PLANNED}"
    " --expect-hash {params.values} > {log} 2>&1"
)


rule train:
    output:
        metrics=LAYOUT.metrics("{dataset}", "{protocol}", "{fusion}", "{method}", "{seed}"),
    input:
        **CELL_INPUT,
    wildcard_constraints:
        seed=r"\d+",
        fusion=r"[a-z_]+",
        method=cells_whose_method(trains=True),
    params:
        **CELL_PARAMS,
    threads: 1
    resources:
        gpu=1,  # sbatch --gpus=1, never probed on the login node; a CPU-only cluster: --set-resources train:gpu=0
        runtime=TRAIN_RUNTIME_MIN,
        mem_mb=TRAIN_MEM_MB,
    log:
        f"{CELL_LOG}.log",
    benchmark:
        f"{CELL_LOG}.benchmark.tsv"
    shell:
        CELL_COMMAND


# The cells whose method trains nothing (the uni-modal ensemble: its finished uni-modal runs evaluated
# together) ask for what they use: no GPU, and the profile's default walltime and memory (an hour, 8 GB).
rule evaluate_only:
    output:
        metrics=LAYOUT.metrics("{dataset}", "{protocol}", "{fusion}", "{method}", "{seed}"),
    input:
        **CELL_INPUT,
    wildcard_constraints:
        seed=r"\d+",
        fusion=r"[a-z_]+",
        method=cells_whose_method(trains=False),
    params:
        **CELL_PARAMS,
    threads: 1
    resources:
        gpu=0,
    log:
        f"{CELL_LOG}.log",
    benchmark:
        f"{CELL_LOG}.benchmark.tsv"
    shell:
        CELL_COMMAND
