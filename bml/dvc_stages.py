"""dvc.yaml, generated from the plan: the same stages, commands and staleness as the Snakefile.

`bml plan --dvc-yaml dvc.yaml` writes it; the committed file is checked against the plan by its first
stage (`plan`) on every `dvc repro`, and by tests/test_plan.py. That stage also writes one witness file per
stage (`.bml/plan/<stage>.json`: the values that decide the stage, as the plan resolved them), and each stage
depends on its own witness, so editing one method's parameter reruns exactly that method's cells (and the
report), as it does under Snakemake, whose rules carry the same values' hash as a param.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from bml.config import PROJECT_ROOT, ConfigError
from bml.methods import method_spec
from bml.plan import Plan

WITNESS_DIR = ".bml/plan"
PLAN_CODE = [
    "bml/plan.py",
    "bml/layout.py",
    "bml/datasets.py",
    "bml/config.py",
    "bml/catalog.py",
    "bml/kinds",
    "bml/methods/__init__.py",
    "bml/dvc_stages.py",
    "bml/stage_code.py",
    "workflow/schemas",
]
HEADER = """\
# Generated from params/ by `bml plan --dvc-yaml dvc.yaml`: edit params/, then regenerate (the `plan` stage
# refuses to run when this file no longer matches the matrix). Every stage runs the `bml` command that the
# matching Snakemake rule runs, and depends on the witness of its own values (.bml/plan/<stage>.json), so
# `dvc repro` reruns exactly what a change reaches, as `snakemake` does. Checkpoints persist across reruns
# (a killed `dvc repro` resumes training); metrics.json files are metrics and history.csv files plots.
"""


def witness(name: str) -> str:
    return f"{WITNESS_DIR}/{name}.json"


def write_witnesses(plan: Plan, folder: Path) -> int:
    """One JSON file per stage with the values that decide it; rewritten only when they change."""
    folder.mkdir(parents=True, exist_ok=True)
    values = plan.witnesses(Path("."))
    for name, value in values.items():
        path = folder / f"{name}.json"
        text = json.dumps(value, indent=1, sort_keys=True, default=str) + "\n"
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
    return len(values)


def _params_files(plan: Plan) -> list[str]:
    d = plan.params_dir
    files = ["params.yaml", "audio_presets.yaml", "published.yaml"]
    files += [f"datasets/{n}.yaml" for n in sorted(plan.datasets)]
    files += [f"protocols/{p}.yaml" for p in sorted({c.protocol for c in plan.cells})]
    files += [
        f"methods/{m}.yaml" for m in sorted({c.method for c in plan.cells}) if (d / "methods" / f"{m}.yaml").is_file()
    ]
    return [f"params/{f}" for f in files]


def stages(plan: Plan) -> dict:
    """Every stage; each depends on its code through one witness per kind (.bml/plan/code-<kind>.json, the
    hashes of the kind's files), which the plan stage rewrites whenever one of those files changes."""
    lay = plan.layout
    code = plan.code()
    out: dict[str, dict] = {
        "plan": {
            "cmd": f"bml plan --write {WITNESS_DIR} --check-dvc dvc.yaml",
            "deps": PLAN_CODE + sorted({f for files in code.values() for f in files} - set(PLAN_CODE)),
            "params": [{f: None} for f in _params_files(plan)],
            "outs": [{witness(n): {"cache": False}} for n in plan.witnesses(PROJECT_ROOT)],
        }
    }
    for name, d in plan.datasets.items():
        base = lay.dataset_dir(name)
        outs = [f"{base}/manifest.csv", f"{base}/manifest.json", f"{base}/listing_skipped.tsv"]
        out[f"manifest-{name}"] = {
            "cmd": f"bml manifest --dataset {name}",
            "deps": [witness(f"manifest-{name}")] + [witness("code-generate" if d.generated else "code-list")],
            "outs": ([lay.raw_dir(name)] if d.generated else []) + outs,
        }
    for r in plan.recipes:
        for k in range(r.n_shards):
            shard = lay.shard(r.dataset, r.name, k)
            out[f"extract-{r.key}-{k}"] = {
                "cmd": f"bml extract --dataset {r.dataset} --recipe {r.name} --shard {k} "
                f"--workers {plan.pipeline['extract']['workers']}",
                "deps": [witness(f"features-{r.key}"), lay.manifest(r.dataset), witness("code-extract")],
                "outs": [shard, shard.removesuffix(".npy") + ".tsv"],
            }
        out[f"pack-{r.key}"] = {
            "cmd": f"bml pack --dataset {r.dataset} --recipe {r.name}",
            "deps": [lay.shard(r.dataset, r.name, k) for k in range(r.n_shards)] + [witness("code-pack")],
            "outs": [lay.packed_dir(r.dataset, r.name)],
            "metrics": [lay.summary(r.dataset, r.name)],  # cached (data/ is not in git): `dvc pull` restores it
        }
    by_name = {c.name: c for c in plan.cells}
    for c in plan.cells:
        run = c.run_dir
        stage = {
            "cmd": f"bml train --cell {c.name} --threads 1",  # as the Snakemake rule: CPU numbers depend on it
            "deps": [witness(f"cell-{c.name}"), lay.packed_dir(c.dataset, c.recipe), witness(f"code-{c.code_kind}")]
            + [by_name[r].metrics for r in c.requires],
        }
        if method_spec(c.method).trains:  # checkpoints survive a rerun, so a killed `dvc repro` resumes
            stage["outs"] = [{f"{run}/checkpoint.pt": {"persist": True}}, {f"{run}/best.pt": {"persist": True}}]
        stage["metrics"] = [c.metrics]  # cached: `dvc pull` brings the results back
        if method_spec(c.method).trains:
            stage["plots"] = [{f"{run}/history.csv": {"x": "epoch"}}]
        out[f"train-{c.name}"] = stage
    rep = lay.report_dir
    out["report"] = {
        "cmd": "bml report",
        "deps": [witness("report")] + [c.metrics for c in plan.cells] + [witness("code-report")],
        "outs": [f"{rep}/tables", f"{rep}/figures", f"{rep}/index.html"],
        "metrics": [{f"{rep}/summary.json": {"cache": False}}],
    }
    return out


def dvc_yaml(plan: Plan) -> str:
    return HEADER + yaml.safe_dump({"stages": stages(plan)}, sort_keys=False, width=120)


def check_dvc_yaml(plan: Plan, path: Path) -> None:
    if not path.is_file() or path.read_text() != dvc_yaml(plan):
        raise ConfigError(
            f"{path} no longer matches params/ (the matrix, datasets or recipes changed): regenerate it "
            f"with `bml plan --dvc-yaml {path}`, then run `dvc repro` again"
        )
