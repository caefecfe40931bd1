"""`make run` after a kill: the Makefile's unlock step lifts the lock a killed Snakemake left, and leaves a
live Snakemake's lock alone. Real Snakemake on a one-rule workflow, killed with SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, bml_env, run

SNAKEFILE = 'rule slow:\n    output: "done.txt"\n    shell: "sleep {config[wait]} && touch {output}"\n'
RESTART = ["snakemake", "--cores", "1", "--config", "wait=0"]


def unlock_command() -> Path:
    """The unlock step `make run` runs first (the Makefile's UNLOCK)."""
    line = re.search(r"^UNLOCK := (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert line, "the Makefile has no UNLOCK line"
    return REPO / line.group(1).strip()


def start_locked_run(folder: Path) -> subprocess.Popen:
    """A snakemake running a 60 s job in `folder`, returned once its lock files exist."""
    (folder / "Snakefile").write_text(SNAKEFILE)
    proc = subprocess.Popen(
        ["snakemake", "--cores", "1", "--config", "wait=60"],
        cwd=folder,
        env=bml_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    locks = folder / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "snakemake did not take its lock"
        time.sleep(0.2)
    return proc


def locked(folder: Path) -> bool:
    locks = folder / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


@pytest.mark.slow
def test_unlock_lifts_a_killed_runs_lock_only(tmp_path):
    proc = start_locked_run(tmp_path)
    try:
        out = run([str(unlock_command())], cwd=tmp_path)
        assert locked(tmp_path) and proc.poll() is None, "a live run's lock was lifted"
        assert "is running" in out.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its job, as a kill -9 of the terminal's group
        proc.wait()
    assert locked(tmp_path), "a killed snakemake should leave its lock"
    blocked = run(RESTART, cwd=tmp_path, check=False)
    assert blocked.returncode != 0 and "LockException" in blocked.stdout + blocked.stderr

    out = run([str(unlock_command())], cwd=tmp_path)
    assert "lifting the lock" in out.stdout and not locked(tmp_path)
    run(RESTART, cwd=tmp_path)
    assert (tmp_path / "done.txt").is_file()
