# The plan (bml/plan.py) resolved from params/ and Snakemake's --config overrides: every path, cell and
# value the rules use comes from it, never written twice.
import json
import os
import shlex

from bml.layout import SPLITS
from bml.methods import method_spec
from bml.plan import digest, load_plan, overrides_of
from bml.stage_code import stage_code

PARAMS = os.path.join(workflow.basedir, "params")
OVERRIDES = overrides_of(config, PARAMS)
PLAN = load_plan(PARAMS, OVERRIDES)
LAYOUT = PLAN.layout
# every bml command resolves the same plan: it gets the same overrides (usually none)
PLANNED = f"--params-dir {shlex.quote(PARAMS)}" + (
    f" --overrides {shlex.quote(json.dumps(OVERRIDES))}" if OVERRIDES else "")


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


def cells_whose_method(trains):
    """The method wildcard of the plan's cells that train (or train nothing)."""
    return names({cell.method for cell in PLAN.cells if method_spec(cell.method).trains == trains})
