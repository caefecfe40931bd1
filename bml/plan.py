"""The plan: params/ (plus command-line overrides) resolved into every stage bml runs, torch-free.

One source of truth for the Snakefile, dvc.yaml and the `bml` commands. `load_plan` reads
params/params.yaml (the matrix), params/datasets/<name>.yaml (sources, modalities, feature recipes),
params/protocols/<name>.yaml (a paper's setting) and params/methods/<name>.yaml (method defaults), checks
every name and value before anything runs, and returns:

- the data stages: one manifest per dataset, one feature extraction per (dataset, recipe) in shards, one
  packing per (dataset, recipe);
- the cells: dataset x protocol x method x fusion x seed, each a frozen record of its resolved
  configuration, the hash of everything that decides its numbers, its paths and the runs it needs;
- each stage's `values` (what decides its outputs) and their hash: Snakemake reruns a job when its hash
  changes (a rule param), DVC when the witness file `bml plan --write` leaves for it changes. So a changed
  value reruns exactly the stages it reaches, under either engine.

Every path comes from its `Layout` (bml/layout.py); each dataset from bml/datasets.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bml.catalog import ENCODERS
from bml.config import (
    PARAMS_DIR,
    SCHEMAS_DIR,
    ConfigError,
    apply_set,
    check,
    merge,
    read_yaml,
    refuse,
    schema_problems,
    typed,
)
from bml.datasets import Dataset, Recipe, load_dataset, names_in
from bml.kinds import KINDS
from bml.layout import Layout
from bml.methods import allowed_fusions, every_run, method_spec, params_schema, required_runs
from bml.methods.checks import phase_problems, schedule_problems, window_problems
from bml.settings import INITS, STEP_DEFAULTS, UNHASHED_DEFAULTS
from bml.stage_code import file_hashes, stage_code

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
EVERY_RUN = "every"  # a matrix block's `runs: every`: every method with every fusion head it works with
# settings that change where or how fast a run goes, never its numbers: left out of its hash
NOT_HASHED = {"train": ("num_workers", "probe_every"), "source": ("root", "workers")}


def cell_name(dataset: str, protocol: str, method: str, fusion: str, seed: int) -> str:
    """A cell's name, as stage names, `bml plan` and `bml train --cell` write it (the names hold no '-')."""
    return f"{dataset}-{protocol}-{method}-{fusion}-s{seed}"


CELL_NAME = re.compile(
    r"^(?P<dataset>[a-z][a-z0-9_]*)-(?P<protocol>[a-z][a-z0-9_]*)-(?P<method>[a-z][a-z0-9_]*)"
    r"-(?P<fusion>[a-z][a-z0-9_]*)-s(?P<seed>[0-9]+)$"
)


def parse_cell_name(name: str) -> dict[str, Any]:
    """{dataset, protocol, method, fusion, seed} of a cell's name; ConfigError when it is not one."""
    match = CELL_NAME.match(name)
    if not match:
        raise ConfigError(f"{name!r} is not a cell name: expected <dataset>-<protocol>-<method>-<fusion>-s<seed>")
    return match.groupdict() | {"seed": int(match["seed"])}


def no_cell(name: str) -> ConfigError:
    return ConfigError(f"no cell {name!r} in the matrix (params/params.yaml: matrix); `bml plan` lists them")


def digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One training run: dataset x protocol x method x fusion x seed."""

    dataset: str
    protocol: str
    method: str
    fusion: str
    seed: int
    recipe: str
    config: dict = field(compare=False, repr=False)  # resolved: run, data, train, method, eval, paths, tracking
    requires: tuple[str, ...] = ()  # names of the cells whose outputs it reads
    code: tuple[str, ...] = ()  # the files whose change reruns it (bml/stage_code.py)

    @property
    def name(self) -> str:
        return cell_name(self.dataset, self.protocol, self.method, self.fusion, self.seed)

    @property
    def hash(self) -> str:
        return self.config["hash"]

    @property
    def run_dir(self) -> str:
        return self.config["paths"]["run_dir"]

    @property
    def metrics(self) -> str:  # written last by `bml train`: the cell's output for both engines
        return f"{self.run_dir}/metrics.json"

    @property
    def code_kind(self) -> str:
        """Its code's name: training's, with its method's module (cells of one module share it)."""
        return f"train-{method_spec(self.method).module.rpartition('.')[2]}"


def hashed_config(config: dict) -> dict:
    """The part of a cell's configuration that decides its numbers (what its hash covers)."""
    kept = {k: copy.deepcopy(config[k]) for k in ("run", "data", "train", "method", "eval")}
    for key in NOT_HASHED["train"]:
        kept["train"].pop(key, None)
    for key, default in UNHASHED_DEFAULTS.items():  # at their default, as before the setting existed
        if kept["train"].get(key) == default:
            kept["train"].pop(key)
    for key in NOT_HASHED["source"]:
        kept["data"]["source"].pop(key, None)
    return kept


# ---- reading params/ -------------------------------------------------------------------------------


def load_pipeline(params_dir: Path = PARAMS_DIR, overrides: dict | None = None) -> dict:
    """params.yaml with `overrides` (Snakemake's --config, typed) merged in, checked against its schema."""
    path = params_dir / "params.yaml"
    pipeline = merge(read_yaml(path), typed(overrides or {}))
    return check(
        pipeline,
        "params.schema.yaml",
        f"{path}" + (" (with --config overrides)" if overrides else ""),
        "pipeline configuration",
    )


def recipe_values(dataset: Dataset, recipe: str, params_dir: Path) -> dict:
    """What decides a recipe's features: the source, the modalities, the recipe, the audio presets it uses."""
    settings = dataset.recipes[recipe]
    presets = read_yaml(params_dir / "audio_presets.yaml")
    source = {k: v for k, v in dataset.source.items() if k not in NOT_HASHED["source"]}
    return {
        "dataset": dataset.name,
        "recipe": recipe,
        "source": source,
        "modalities": dataset.modalities,
        "settings": settings,
        "presets": {
            s["preset"]: presets[s["preset"]]
            for m, s in settings.items()
            if m != "span" and KINDS[dataset.modalities[m]].uses_preset
        },
    }


def resolve_cell(
    dataset: Dataset,
    protocol: str,
    method: str,
    fusion: str,
    seed: int,
    params_dir: Path,
    pipeline: dict,
    layout: Layout,
    sets: tuple[str, ...] = (),
) -> Cell:
    """One cell, resolved and checked: protocol < protocol's dataset section < --set; method defaults <
    protocol's methods section < protocol's dataset section < --set."""
    where = f"cell {dataset.name}/{protocol}/{method}/{fusion}"
    ppath = params_dir / "protocols" / f"{protocol}.yaml"
    if not ppath.is_file():
        raise ConfigError(f"{where}: unknown protocol {protocol!r}; choose one of {names_in(params_dir, 'protocols')}")
    proto = check(read_yaml(ppath), "protocol.schema.yaml", ppath, "protocol")
    if dataset.name not in proto["datasets"]:
        raise ConfigError(
            f"{where}: protocol {protocol!r} ({ppath}) has no setting for dataset {dataset.name!r}; "
            f"it covers {sorted(proto['datasets'])}"
        )
    on_dataset = proto["datasets"][dataset.name]
    if on_dataset["recipe"] not in dataset.recipes:
        raise ConfigError(
            f"{ppath}: key 'datasets.{dataset.name}.recipe': {on_dataset['recipe']!r} is not a recipe "
            f"of dataset {dataset.name!r}; choose one of {sorted(dataset.recipes)}"
        )
    try:
        spec = method_spec(method)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    modalities = list(dataset.modalities)
    if spec.modality is not None and spec.modality not in modalities:
        raise ConfigError(
            f"{where}: dataset {dataset.name!r} has no modality {spec.modality!r}; "
            f"its modalities are {modalities} (uni-modal runs: {[m + '_only' for m in modalities]})"
        )
    if spec.n_modalities == 2 and len(modalities) != 2:
        raise ConfigError(
            f"{where}: {spec.title}'s formulas are defined for two modalities ({spec.paper}); dataset "
            f"{dataset.name!r} has {len(modalities)}: {modalities}"
        )
    fusions = allowed_fusions(spec, len(modalities))
    if fusion not in fusions:
        raise ConfigError(
            f"{where}: method {method!r} works with fusion {fusions} on {len(modalities)} modalities, not {fusion!r}"
        )
    needed = _required_runs(where, spec, modalities, fusion)
    mpath = params_dir / "methods" / f"{method}.yaml"
    method_params = read_yaml(mpath) if mpath.is_file() else {}
    method_params = merge(
        merge(method_params, proto.get("methods", {}).get(method, {})), on_dataset.get("methods", {}).get(method, {})
    )
    run = {"dataset": dataset.name, "protocol": protocol, "method": method, "fusion": fusion, "seed": int(seed)}
    run_dir = layout.run_dir(dataset.name, protocol, fusion, method, seed)
    config = {
        "run": run,
        "data": {
            "recipe": on_dataset["recipe"],
            "modalities": dict(dataset.modalities),
            "source": {k: v for k, v in dataset.source.items()},
            "settings": copy.deepcopy(dataset.recipes[on_dataset["recipe"]]),
        },
        "train": merge(merge(STEP_DEFAULTS | UNHASHED_DEFAULTS, proto["train"]), on_dataset.get("train", {})),
        "method": method_params,
        "eval": copy.deepcopy(pipeline["evaluation"]),
        "paths": {
            "packed_dir": layout.packed_dir(dataset.name, on_dataset["recipe"]),
            "run_dir": run_dir,
            "results_root": layout.results_root,
        },
        "requires": {m: layout.run_dir(dataset.name, protocol, f, m, seed) for m, f in needed},
        "tracking": copy.deepcopy(pipeline["tracking"]),
        "protocol_description": proto["description"],
    }
    for item in sets:
        apply_set(config, item)
    refuse(f"{ppath} (train section, with any --set overrides)", "protocol", _train_problems(config["train"]))
    evaluation = read_yaml(SCHEMAS_DIR / "params.schema.yaml")["properties"]["evaluation"]
    refuse(
        "params/params.yaml (evaluation section, with any --set eval overrides)",
        "evaluation settings",
        schema_problems(evaluation, config["eval"]),
    )
    refuse(
        f"{mpath} (with the protocol's and any --set overrides)",
        f"parameters of method {method!r} (declared in bml/methods/__init__.py)",
        schema_problems(params_schema(spec), config["method"]),
    )
    if spec.problems is not None:
        refuse(
            f"{mpath} (with the protocol's and any --set overrides)",
            f"settings of method {method!r} on dataset {dataset.name!r}, protocol {protocol!r}",
            spec.problems(config["method"], config["train"], modalities),
        )
    refuse(
        f"{mpath} (with the protocol's and any --set overrides)",
        f"schedule of method {method!r} on {config['train']['epochs']} epochs",
        schedule_problems(spec, config["method"], config["train"]["epochs"]),
    )
    refuse(
        f"{mpath} (with the protocol's and any --set overrides)",
        f"modulation window of method {method!r} on {config['train']['epochs']} epochs",
        window_problems(config["method"], config["train"]["epochs"]),
    )
    refuse(
        f"{mpath} (with the protocol's and any --set overrides)",
        f"phases of method {method!r} for {ppath.name}'s {config['train']['epochs']} epochs",
        phase_problems(spec, config["method"], config["train"]["epochs"]),
    )
    config["hash"] = digest(hashed_config(config))
    requires = tuple(cell_name(dataset.name, protocol, m, f, seed) for m, f in needed)
    return Cell(
        dataset.name,
        protocol,
        method,
        fusion,
        int(seed),
        on_dataset["recipe"],
        config,
        requires,
        stage_code("train", spec.module),
    )


def _required_runs(where: str, spec, modalities: list[str], fusion: str) -> list[tuple[str, str]]:
    """(method, fusion) of the runs a cell needs (its method's `requires`, resolved), each one a run bml can make
    on this dataset; ConfigError naming the method's declaration otherwise. Keyed by method in the cell's
    configuration (`requires`), so two needed runs of one method are refused too."""
    needed = required_runs(spec, modalities, fusion)
    possible = every_run(modalities)
    bad = [f"{m} with fusion {f}" for m, f in needed if (m, f) not in possible]
    twice = sorted({m for m, _ in needed if [n for n, _ in needed].count(m) > 1})
    if bad or twice:
        what = f"runs bml cannot make on {modalities}: {bad}" if bad else f"one method twice: {twice}"
        raise ConfigError(
            f"{where}: method {spec.name!r} needs {what} (bml/methods/__init__.py: its requires {list(spec.requires)})"
        )
    return needed


def _train_problems(train: dict) -> list[str]:
    schema = read_yaml(SCHEMAS_DIR / "protocol.schema.yaml")
    problems = schema_problems(schema["properties"]["train"] | {"$defs": schema.get("$defs", {})}, train)
    if train.get("encoder") not in ENCODERS:
        problems.append(f"key 'encoder': {train.get('encoder')!r} is not one of {list(ENCODERS)}")
    if train.get("init", UNHASHED_DEFAULTS["init"]) not in INITS:
        problems.append(f"key 'init': {train['init']!r} is not one of {list(INITS)}")
    if train.get("scheduler", {}).get("name") == "step" and not {"step_size", "gamma"} <= set(train["scheduler"]):
        problems.append("key 'scheduler': a step scheduler needs step_size and gamma")
    return problems


# ---- the plan --------------------------------------------------------------------------------------


@dataclass
class Plan:
    params_dir: Path
    pipeline: dict
    layout: Layout
    datasets: dict[str, Dataset]  # the datasets the matrix uses
    recipes: list[Recipe]
    cells: list[Cell]
    overrides: dict = field(default_factory=dict)

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise no_cell(name)

    def find(self, dataset: str, protocol: str, method: str, fusion: str, seed: int) -> Cell:
        return self.cell(cell_name(dataset, protocol, method, fusion, seed))

    def recipe(self, dataset: str, recipe: str) -> Recipe:
        for r in self.recipes:
            if (r.dataset, r.name) == (dataset, recipe):
                return r
        raise ConfigError(f"no recipe {recipe!r} of dataset {dataset!r} in the plan")

    def dataset_values(self, name: str) -> dict:
        d = self.datasets[name]
        return {
            "dataset": name,
            "source": {k: v for k, v in d.source.items() if k not in NOT_HASHED["source"]},
            "modalities": d.modalities,
        }

    def report_values(self) -> dict:
        return {
            "report": self.pipeline["report"],
            "titles": {name: d.title for name, d in self.datasets.items()},
            "cells": sorted(c.name for c in self.cells),
            "published": read_yaml(self.params_dir / "published.yaml"),
            "claims": read_yaml(claims) if (claims := self.params_dir / "claims.yaml").is_file() else None,
        }

    def code(self) -> dict[str, tuple[str, ...]]:
        """{code kind: its files}, one per kind of stage the plan runs (training: one per method module)."""
        kinds = {"generate" if d.generated else "list": () for d in self.datasets.values()}
        kinds |= {"extract": (), "pack": ()} if self.recipes else {}
        out = {kind: stage_code(kind) for kind in kinds}
        out |= {c.code_kind: c.code for c in self.cells}
        out["report"] = stage_code("report")
        return out

    def witnesses(self, root: Path = Path(".")) -> dict[str, dict]:
        """{stage name: the values that decide it}: what `bml plan --write` leaves for DVC to compare. A code
        witness (`code-<kind>`) holds the hashes of that kind's files under `root`, the project DVC runs in."""
        out = {f"manifest-{d}": self.dataset_values(d) for d in self.datasets}
        out |= {f"features-{r.key}": r.values for r in self.recipes}
        out |= {f"cell-{c.name}": hashed_config(c.config) for c in self.cells}
        out["report"] = self.report_values()
        out |= {f"code-{kind}": file_hashes(files, root) for kind, files in self.code().items()}
        return out


def report_dir(pipeline: dict, params_dir: Path) -> str:
    """report.out_dir for the matrix params.yaml names, whose report is the committed one; <out_dir>/<matrix>
    for a matrix chosen by an override (`--config matrix=all`: `make run-all`), so it never rewrites that one."""
    out, matrix = pipeline["report"]["out_dir"], pipeline["matrix"]
    return out if matrix == read_yaml(params_dir / "params.yaml")["matrix"] else f"{out}/{matrix}"


def layout_of(pipeline: dict, params_dir: Path, results_root: str | None = None) -> Layout:
    root = results_root or pipeline["results_root"]
    return Layout(pipeline["data_root"], root, report_dir(pipeline, params_dir))


def matrix_blocks(pipeline: dict) -> list[dict]:
    """The blocks of the matrix that runs (params.yaml: matrix)."""
    if pipeline["matrix"] not in pipeline["matrices"]:
        raise ConfigError(
            f"params/params.yaml: key 'matrix': {pipeline['matrix']!r} is not one of the matrices "
            f"{sorted(pipeline['matrices'])}"
        )
    return pipeline["matrices"][pipeline["matrix"]]


def block_runs(block: dict, dataset: Dataset) -> list[tuple[str, str]]:
    """(method, fusion) of a matrix block's runs; `runs: every` is every run bml can make on the dataset."""
    if block["runs"] == EVERY_RUN:
        return every_run(list(dataset.modalities))
    return [(run["method"], run["fusion"]) for run in block["runs"]]


def load_cell(name: str, params_dir: str | Path = PARAMS_DIR, overrides: dict | None = None) -> Cell:
    """One cell of the matrix by name, resolved alone (`bml train --cell`): the same Cell as the plan's,
    without resolving the others (the plan, which Snakemake and DVC load first, checks the whole matrix)."""
    params_dir = Path(params_dir)
    want = parse_cell_name(name)
    pipeline = load_pipeline(params_dir, overrides)
    for block in matrix_blocks(pipeline):
        if (block["dataset"], block["protocol"]) != (want["dataset"], want["protocol"]):
            continue
        dataset = load_dataset(block["dataset"], params_dir, pipeline)
        if want["seed"] in block["seeds"] and (want["method"], want["fusion"]) in block_runs(block, dataset):
            args = (want["method"], want["fusion"], want["seed"], params_dir, pipeline, layout_of(pipeline, params_dir))
            return resolve_cell(dataset, want["protocol"], *args)
    raise no_cell(name)


def load_plan(params_dir: str | Path = PARAMS_DIR, overrides: dict | None = None) -> Plan:
    """Resolve params/ (with Snakemake's --config overrides) into the plan; ConfigError on anything wrong."""
    params_dir = Path(params_dir)
    pipeline = load_pipeline(params_dir, overrides)
    layout = layout_of(pipeline, params_dir)
    datasets: dict[str, Dataset] = {}
    cells: list[Cell] = []
    for i, block in enumerate(matrix_blocks(pipeline)):
        name = block["dataset"]
        if name not in datasets:
            datasets[name] = load_dataset(name, params_dir, pipeline)
        dataset = datasets[name]
        if not dataset.generated and not dataset.source.get("root"):
            raise ConfigError(
                f"params/params.yaml: matrix[{i}] uses dataset {name!r}, whose release root is not set; "
                f"set datasets.{name}.root in params/params.yaml or pass --config "
                f"datasets='{{{name}: {{root: /path/to/it}}}}' (`bml datasets` says what it expects)"
            )
        block_cells = [
            resolve_cell(dataset, block["protocol"], method, fusion, seed, params_dir, pipeline, layout)
            for method, fusion in block_runs(block, dataset)
            for seed in block["seeds"]
        ]
        names = {c.name for c in block_cells}
        for cell in block_cells:
            missing = [r for r in cell.requires if r not in names]
            if missing:
                add = [{k: parse_cell_name(r)[k] for k in ("method", "fusion")} for r in missing]
                raise ConfigError(
                    f"params/params.yaml: key 'matrix[{i}].runs' (matrix {pipeline['matrix']!r}): {cell.method} "
                    f"needs the runs {missing} (same dataset, protocol and seed), which the block lacks; add "
                    f"{sorted(add, key=lambda r: (r['method'], r['fusion']))} to its runs"
                )
        cells += block_cells
    seen: dict[str, int] = {}
    for cell in cells:
        seen[cell.name] = seen.get(cell.name, 0) + 1
    refuse("params/params.yaml", "matrix", [f"cell {n} appears {k} times" for n, k in seen.items() if k > 1])
    recipes = [
        Recipe(d, r, recipe_values(datasets[d], r, params_dir), pipeline["extract"]["n_shards"])
        for d, r in dict.fromkeys((c.dataset, c.recipe) for c in cells)
    ]
    return Plan(params_dir, pipeline, layout, datasets, recipes, cells, dict(overrides or {}))


def overrides_of(config: dict, params_dir: str | Path = PARAMS_DIR) -> dict:
    """What Snakemake's config holds beyond params.yaml (its --config overrides), as a nested dict."""

    def diff(new: Any, old: Any) -> Any:
        if isinstance(new, dict) and isinstance(old, dict):
            return {k: diff(v, old.get(k)) for k, v in new.items() if k not in old or v != old[k]}
        return new

    return diff(config, read_yaml(Path(params_dir) / "params.yaml"))
