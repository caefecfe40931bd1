"""Does the modality imbalance show, and what does each method change? Paired comparisons over seeds.

Reads the default matrix's results (results/<dataset>/<protocol>/<fusion>/<method>/seed<k>/metrics.json,
written by `make run`; the cells are params/params.yaml's train.runs, plus the ensemble) and prints, per
run, mean +- std over seeds of test accuracy, per-modality accuracy and each encoder's linear-probe
accuracy; then the paired difference of the visual probe, joint - visual-only (../shared/AVDIGITS.md's
prototype measured 45 vs 61); then every other method against joint with the same fusion, on accuracy
and visual probe, each with a paired t-test over the seeds both have (no multiple-comparison correction
here: the report's tables add Holm's).

    python benchmarks/phenomenon.py [--results results] [--protocol embedded] [--which best|last]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
KEYS = ["acc", "acc_audio", "acc_visual", "probe_audio", "probe_visual"]


def cells(params: Path) -> list[tuple[str, str]]:
    """(fusion, method) of every run in the default matrix, the ensemble last."""
    train = yaml.safe_load(params.read_text())["train"]
    found = [(c["fusion"], c["method"]) for c in train["runs"]]
    return found + ([("none", "ensemble")] if train["ensemble"] else [])


def load(
    results: Path, dataset: str, protocol: str, which: str, params: Path = REPO / "params" / "params.yaml"
) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for fusion, method in cells(params):
        for path in sorted((results / dataset / protocol / fusion / method).glob("seed*/metrics.json")):
            metrics = json.loads(path.read_text())
            runs.setdefault(f"{method} ({fusion})", {})[metrics["run"]["seed"]] = metrics["test"][which]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--dataset", default="avdigits")
    parser.add_argument("--protocol", default="embedded")
    parser.add_argument("--which", default="best", choices=["best", "last"], help="best-on-val or last epoch")
    args = parser.parse_args()
    runs = load(Path(args.results), args.dataset, args.protocol, args.which)
    print(f"{'run':24s} {'seeds':>5s} " + " ".join(f"{k:>14s}" for k in KEYS))
    for name, by_seed in runs.items():
        cells = []
        for key in KEYS:
            values = [m[key] for m in by_seed.values() if key in m]
            cells.append(
                f"{np.mean(values):6.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:4.1f}"
                if values
                else f"{'—':>14s}"
            )
        print(f"{name:24s} {len(by_seed):5d} " + " ".join(f"{c:>14s}" for c in cells))
    joint, visual = runs.get("joint (concat)", {}), runs.get("visual_only (none)", {})
    seeds = sorted(set(joint) & set(visual))
    if len(seeds) >= 2:
        diff = np.array([joint[s]["probe_visual"] - visual[s]["probe_visual"] for s in seeds])
        t = stats.ttest_rel([joint[s]["probe_visual"] for s in seeds], [visual[s]["probe_visual"] for s in seeds])
        print(
            f"\nvisual probe, joint - visual-only, paired over seeds {seeds}: {diff.mean():+.1f} ± "
            f"{diff.std(ddof=1):.1f} points (paired t-test p = {t.pvalue:.2g})"
        )
    print()
    for name, by_seed in runs.items():
        method, fusion = name.split(" (")
        base = runs.get(f"joint ({fusion}", {})
        seeds = sorted(set(by_seed) & set(base))
        if method in ("joint", "audio_only", "visual_only", "ensemble") or len(seeds) < 2:
            continue
        parts = []
        for key in ("acc", "probe_visual"):
            a, b = [by_seed[s][key] for s in seeds], [base[s][key] for s in seeds]
            d = np.subtract(a, b)
            parts.append(f"{key} {d.mean():+5.1f} ± {d.std(ddof=1):3.1f} (p = {stats.ttest_rel(a, b).pvalue:.2g})")
        print(f"{name:24s} - joint, {len(seeds)} paired seeds: " + "   ".join(parts))


if __name__ == "__main__":
    main()
