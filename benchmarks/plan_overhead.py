"""What planning costs: `snakemake -n` on bml's matrix against a one-rule workflow, in the same run; and, on a
finished project, the no-op reruns of `snakemake` and `dvc repro` (targets: 3x, 5 s and 15 s).

    python benchmarks/plan_overhead.py                       # dry runs of the default matrix (54 cells)
    python benchmarks/plan_overhead.py --finished DIR        # also the no-op reruns in DIR, a finished project
                                                             # (after `make run`; DVC's lock made by `dvc commit`)

Each figure is the median of --rounds runs, the two dry runs interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ONE_RULE = 'rule all:\n    output: "done.txt"\n    shell: "touch {output}"\n'
# N jobs that do nothing but start a shell: what Snakemake itself costs per job, locally
N_JOBS = (
    'rule all:\n    input: expand("out/{k}.txt", k=range(N))\n\n'
    'rule one:\n    output: "out/{k}.txt"\n    shell: "touch {output}"\n'
)


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--finished", type=Path, default=None, help="a finished project: time its no-op reruns")
    parser.add_argument("--jobs", type=int, default=40, help="trivial jobs for the per-job scheduling overhead")
    args = parser.parse_args()
    snakemake, dvc = str(BIN / "snakemake"), str(BIN / "dvc")
    with tempfile.TemporaryDirectory() as tmp:
        one, ours = Path(tmp) / "one", Path(tmp) / "bml"
        one.mkdir()
        (one / "Snakefile").write_text(ONE_RULE)
        ours.mkdir()
        for name in ("Snakefile", "params", "workflow", "profiles", "bml"):
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, ours / name)
        base, plan = [], []
        for _ in range(args.rounds):
            base.append(timed([snakemake, "-n", "--cores", "2"], one))
            plan.append(timed([snakemake, "-n", "--cores", "2"], ours))
        jobs = Path(tmp) / "jobs"
        jobs.mkdir()
        (jobs / "Snakefile").write_text(N_JOBS.replace("range(N)", f"range({args.jobs})"))
        many = timed([snakemake, "--cores", "2", "--quiet", "all"], jobs)
    b, p = statistics.median(base), statistics.median(plan)
    print(f"snakemake -n, one-rule workflow: {b:.2f} s (median of {args.rounds})")
    print(f"snakemake -n, bml's default matrix: {p:.2f} s  ->  {p / b:.2f}x the one-rule workflow (target <= 3x)")
    print(
        f"local scheduling overhead: {args.jobs} trivial jobs in {many:.1f} s with --cores 2 -> "
        f"{1e3 * (many - b) / args.jobs:.0f} ms per job beyond Snakemake's start"
    )
    if args.finished:
        noop = [timed([snakemake, "--cores", "2"], args.finished) for _ in range(args.rounds)]
        repro = [timed([dvc, "repro"], args.finished) for _ in range(args.rounds)]
        print(f"no-op `snakemake` on {args.finished}: {statistics.median(noop):.2f} s (target 5 s)")
        print(f"no-op `dvc repro` on {args.finished}: {statistics.median(repro):.2f} s (target 15 s)")


if __name__ == "__main__":
    main()
