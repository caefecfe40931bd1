# Data stages, per dataset and feature recipe: the manifest (generated, or listed from a release on disk),
# feature extraction in shards (one ffmpeg decode per clip for every modality), packing into one file per
# split. Each rule calls the `bml` command that dvc.yaml runs, with the plan's values.


rule generate:
    output:
        raw=directory(LAYOUT.raw_dir("{dataset}")),
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}", "manifest.json"),
        skipped=LAYOUT.manifest("{dataset}", "listing_skipped.tsv"),
    input:
        code("generate"),
    wildcard_constraints:
        dataset=names(d for d, spec in PLAN.datasets.items() if spec.generated),
    params:
        values=lambda w: digest(PLAN.dataset_values(w.dataset)),
    threads: PLAN.pipeline["extract"]["workers"]
    log:
        "logs/{dataset}/manifest.log",
    benchmark:
        "logs/{dataset}/manifest.benchmark.tsv"
    shell:
        "bml manifest --dataset {wildcards.dataset} --workers {threads} {PLANNED} --expect-hash {params.values}"
        " > {log} 2>&1"


rule list_release:
    output:
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}", "manifest.json"),
        skipped=LAYOUT.manifest("{dataset}", "listing_skipped.tsv"),
    input:
        code("list"),
    wildcard_constraints:
        dataset=names(d for d, spec in PLAN.datasets.items() if not spec.generated),
    params:
        values=lambda w: digest(PLAN.dataset_values(w.dataset)),
    log:
        "logs/{dataset}/manifest.log",
    shell:
        "bml manifest --dataset {wildcards.dataset} {PLANNED} --expect-hash {params.values} > {log} 2>&1"


rule extract:
    output:
        records=LAYOUT.shard("{dataset}", "{recipe}", "{shard}"),
        status=LAYOUT.shard("{dataset}", "{recipe}", "{shard}", ".tsv"),
    input:
        LAYOUT.manifest("{dataset}"),
        code("extract"),
    wildcard_constraints:
        shard=r"\d+",
    params:
        values=lambda w: digest(recipe_of(w).values),
    threads: PLAN.pipeline["extract"]["workers"]  # ffmpeg processes at a time within the job
    log:
        "logs/{dataset}/{recipe}/extract_{shard}.log",
    benchmark:
        "logs/{dataset}/{recipe}/extract_{shard}.benchmark.tsv"
    shell:
        "bml extract --dataset {wildcards.dataset} --recipe {wildcards.recipe} --shard {wildcards.shard}"
        " --workers {threads} {PLANNED}"
        " --expect-hash {params.values} > {log} 2>&1"


rule pack:
    output:
        [LAYOUT.packed("{dataset}", "{recipe}", f"{split}.{ext}") for split in SPLITS
         for ext in ("npy", "json")],
        skipped=LAYOUT.packed("{dataset}", "{recipe}", "skipped.tsv"),
        summary=LAYOUT.summary("{dataset}", "{recipe}"),
    input:
        lambda w: [LAYOUT.shard(w.dataset, w.recipe, k) for k in range(recipe_of(w).n_shards)],
        code("pack"),
    log:
        "logs/{dataset}/{recipe}/pack.log",
    shell:
        "bml pack --dataset {wildcards.dataset} --recipe {wildcards.recipe} {PLANNED} > {log} 2>&1"
