"""bml's workflow: every dataset of the matrix from its video files (or its generator) to packed features,
then every training cell, then the tables, figures and report page (`bml report`, reports/index.html).

    snakemake --cores all --resources gpu=4      # profiles/default applies by itself
    snakemake -n                                 # what would run
    snakemake --profile profiles/slurm           # the same workflow on a SLURM cluster

params/ is resolved into the plan (bml/plan.py) before any job is scheduled: a bad name or value is
refused here. Each rule's `values` param is the hash of what decides its outputs, so a changed value
reruns exactly the jobs it reaches.
"""


configfile: f"{workflow.basedir}/params/params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        packed_splits(),
        [cell.metrics for cell in PLAN.cells],
        LAYOUT.report("index.html"),
