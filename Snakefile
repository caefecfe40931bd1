"""bml's workflow: the embedded (or a real) dataset from video files to packed features.

    snakemake --cores all                  # the default profile (workflow/profiles/default) applies
    snakemake -n                           # what would run
The config (params/params.yaml) is validated before any job is scheduled.
"""

from bml.config import validate_config


configfile: f"{workflow.basedir}/params/params.yaml"


validate_config(config, source="params/params.yaml (with any --config overrides)")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


rule all:
    default_target: True
    input:
        packed_splits(),
