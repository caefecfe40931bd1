"""Does the modality imbalance show? Visual linear-probe accuracy of joint training vs visual-only training.

Reads the default matrix's results (results/<dataset>/<protocol>/<fusion>/<method>/seed<k>/metrics.json,
written by `make run`) and prints, per method, mean +- std over seeds of test accuracy and of each
encoder's linear-probe accuracy, then the paired difference of the visual probe, joint - visual-only,
with a paired t-test over the seeds both have. ../shared/AVDIGITS.md's prototype measured 45 vs 61.

    python benchmarks/phenomenon.py [--results results] [--protocol embedded] [--which best|last]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

CELLS = [("none", "audio_only"), ("none", "visual_only"), ("concat", "joint"), ("none", "ensemble")]
KEYS = ["acc", "acc_audio", "acc_visual", "probe_audio", "probe_visual"]


def load(results: Path, dataset: str, protocol: str, which: str) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for fusion, method in CELLS:
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
            cells.append(f"{np.mean(values):6.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:4.1f}"
                         if values else f"{'—':>14s}")
        print(f"{name:24s} {len(by_seed):5d} " + " ".join(f"{c:>14s}" for c in cells))
    joint, visual = runs.get("joint (concat)", {}), runs.get("visual_only (none)", {})
    seeds = sorted(set(joint) & set(visual))
    if len(seeds) >= 2:
        diff = np.array([joint[s]["probe_visual"] - visual[s]["probe_visual"] for s in seeds])
        t = stats.ttest_rel([joint[s]["probe_visual"] for s in seeds], [visual[s]["probe_visual"] for s in seeds])
        print(f"\nvisual probe, joint - visual-only, paired over seeds {seeds}: {diff.mean():+.1f} ± "
              f"{diff.std(ddof=1):.1f} points (paired t-test p = {t.pvalue:.2g})")


if __name__ == "__main__":
    main()
