# The plan (bml/plan.py) resolved from params/ and Snakemake's --config overrides: every path, cell and
# value the rules use comes from it, never written twice.
import json
import os
import shlex
import shutil

from bml.layout import SPLITS
from bml.plan import digest, load_plan, overrides_of
from bml.stage_code import stage_code

PARAMS = os.path.join(workflow.basedir, "params")
OVERRIDES = overrides_of(config, PARAMS)
PLAN = load_plan(PARAMS, OVERRIDES)
LAYOUT = PLAN.layout
# every bml command resolves the same plan: it gets the same overrides (usually none)
PLANNED = f"--params-dir {shlex.quote(PARAMS)}" + (
    f" --overrides {shlex.quote(json.dumps(OVERRIDES))}" if OVERRIDES else "")
# A training job takes one GPU where this machine has them; a cluster profile sets it for its nodes
# (profiles/slurm: set-resources), so the submitting host's hardware never decides a cluster job's.
GPUS_PER_TRAIN_JOB = 1 if shutil.which("nvidia-smi") else 0


def here(files):
    """The project's files, relative to the working directory: a copied checkout, .snakemake included, finds
    its jobs up to date (absolute paths in the recorded inputs would rerun every one)."""
    return [os.path.relpath(os.path.join(workflow.basedir, f)) for f in files]


def code(kind):
    """A kind of stage's code: its entry modules' import closure (bml/stage_code.py)."""
    return here(stage_code(kind))


def packed_splits():
    return [LAYOUT.packed(r.dataset, r.name, f"{split}.npy") for r in PLAN.recipes for split in SPLITS]


def recipe_of(wildcards):
    return PLAN.recipe(wildcards.dataset, wildcards.recipe)


def cell_of(wildcards):
    return PLAN.find(wildcards.dataset, wildcards.protocol, wildcards.method, wildcards.fusion, int(wildcards.seed))


def names(values):
    """A wildcard constraint matching exactly these names."""
    return "|".join(sorted(values)) or "(?!)"
