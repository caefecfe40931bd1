"""Does the modality imbalance show, and what does each method change? Paired comparisons over seeds.

Reads the runs of the current matrix (params/params.yaml: matrices[matrix], or --matrix; each block's runs and
seeds) from results/<dataset>/<protocol>/<fusion>/<method>/seed<k>/metrics.json (written by `make run`) and
prints, per block (dataset, protocol) and per run, mean ± std over seeds of test accuracy, each modality's
accuracy (acc_<m>) and each encoder's linear-probe accuracy (probe_<m>), for every modality of the dataset;
then, per modality m, the paired difference of its probe, joint - <m>_only (with each fusion joint runs with
in the block): the calibration prototype (docs/methods.md) measured 45 vs 61 for the visual probe; then every other
multimodal method against joint with the same fusion, on accuracy and every probe, each with a paired t-test
over the seeds both have (bml/stats.py: paired_test; no multiple-comparison correction here: the report's
tables add Holm's).

    python benchmarks/phenomenon.py [--results results] [--matrix default] [--which best|last]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bml.datasets import load_dataset  # noqa: E402
from bml.layout import Layout  # noqa: E402
from bml.methods import UNIMODAL_SUFFIX, method_spec  # noqa: E402
from bml.plan import load_pipeline  # noqa: E402
from bml.stats import paired_test  # noqa: E402


def load_block(block: dict, layout: Layout, which: str) -> dict[str, dict[int, dict]]:
    """{"<method> (<fusion>)": {seed: test metrics}} of one matrix block, in the block's order; runs with no
    metrics.json yet are left out."""
    runs: dict[str, dict[int, dict]] = {}
    for run in block["runs"]:
        for seed in block["seeds"]:
            path = Path(layout.metrics(block["dataset"], block["protocol"], run["fusion"], run["method"], seed))
            if path.is_file():
                metrics = json.loads(path.read_text())
                runs.setdefault(f"{run['method']} ({run['fusion']})", {})[seed] = metrics["test"][which]
    return runs


def mean_std(values: list[float]) -> str:
    if not values:
        return f"{'—':>14s}"
    return f"{np.mean(values):6.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:4.1f}"


def compare(a: dict[int, dict], b: dict[int, dict], key: str) -> str:
    """`key` of a - b, paired over the seeds both have: mean ± std of the differences and the t-test's p."""
    seeds = sorted(s for s in set(a) & set(b) if key in a[s] and key in b[s])
    found = paired_test([a[s][key] for s in seeds], [b[s][key] for s in seeds], test="t")
    if found["p"] is None:
        return f"{key} — ({len(seeds)} paired seeds)"
    return f"{key} {found['mean_diff']:+5.1f} ± {found['std_diff']:3.1f} (p = {found['p']:.2g})"


def print_block(block: dict, modalities: list[str], runs: dict[str, dict[int, dict]]) -> None:
    keys = ["acc", *[f"acc_{m}" for m in modalities], *[f"probe_{m}" for m in modalities]]
    print(f"\n{block['dataset']} / {block['protocol']} (seeds {block['seeds']})")
    print(f"{'run':24s} {'seeds':>5s} " + " ".join(f"{k:>14s}" for k in keys))
    for name, by_seed in runs.items():
        cells = [mean_std([m[key] for m in by_seed.values() if key in m]) for key in keys]
        print(f"{name:24s} {len(by_seed):5d} " + " ".join(f"{c:>14s}" for c in cells))

    joints = {name.split(" (")[1][:-1]: by_seed for name, by_seed in runs.items() if name.startswith("joint (")}
    print()
    for fusion, joint in joints.items():
        for m in modalities:
            alone = runs.get(f"{m}{UNIMODAL_SUFFIX} (none)")
            if alone is not None:
                print(f"{m} probe, joint ({fusion}) - {m}{UNIMODAL_SUFFIX}: " + compare(joint, alone, f"probe_{m}"))
    print()
    for name, by_seed in runs.items():
        method, fusion = name[:-1].split(" (")
        spec = method_spec(method)
        if method == "joint" or spec.modality is not None or not spec.trains or fusion not in joints:
            continue
        parts = [compare(by_seed, joints[fusion], key) for key in ("acc", *[f"probe_{m}" for m in modalities])]
        seeds = len(set(by_seed) & set(joints[fusion]))
        print(f"{name:24s} - joint, {seeds} paired seeds: " + "   ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="results root (default: params.yaml's results_root)")
    parser.add_argument("--matrix", default=None, help="a matrix of params.yaml (default: its `matrix`)")
    parser.add_argument("--params-dir", type=Path, default=REPO / "params")
    parser.add_argument("--which", default="best", choices=["best", "last"], help="best-on-val or last epoch")
    args = parser.parse_args()
    pipeline = load_pipeline(args.params_dir)
    matrix = args.matrix or pipeline["matrix"]
    if matrix not in pipeline["matrices"]:
        parser.error(f"--matrix {matrix!r} is not one of params.yaml's matrices {sorted(pipeline['matrices'])}")
    layout = Layout(results_root=args.results or pipeline["results_root"])
    print(f"matrix {matrix}, runs under {layout.results_root}, test split, {args.which} checkpoint")
    for block in pipeline["matrices"][matrix]:
        modalities = list(load_dataset(block["dataset"], args.params_dir, pipeline).modalities)
        print_block(block, modalities, load_block(block, layout, args.which))


if __name__ == "__main__":
    main()
