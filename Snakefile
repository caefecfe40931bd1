"""bml's workflow: the embedded (or a real) dataset from video files to packed features, then the
default training matrix (params/params.yaml: train) through `bml train`, then the tables, figures and
report page (`bml report`, reports/index.html).

    snakemake --cores all                  # the default profile (workflow/profiles/default) applies
    snakemake -n                           # what would run
    snakemake --profile workflow/profiles/slurm  # the same workflow on a SLURM cluster
The config (params/params.yaml) is validated before any job is scheduled.
"""

from pathlib import Path

from bml.config import validate_config
from bml.train import check_matrix


configfile: f"{workflow.basedir}/params/params.yaml"


validate_config(config, source="params/params.yaml (with any --config overrides)")
check_matrix(config, Path(workflow.basedir) / "params")  # every (method, fusion) cell and its protocol, resolved before any job starts


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        packed_splits(),
        train_targets(),
        f"{REPORT}/index.html",
