"""The committed fingerprint of the data (bml/fingerprint.py): the data stages say whether what they made is
what the committed results were trained on, and name both hashes when it is not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import make_data, run

N_CLIPS, SEED = 12, 4
OVERRIDES = json.dumps({"datasets": {"avdigits": {"n_clips": N_CLIPS, "seed": SEED}}})
WRITE = (
    "import json, sys\nfrom bml.plan import load_plan\nfrom bml import fingerprint\n"
    "plan = load_plan(overrides=json.loads(sys.argv[1]))\n"
    "print(fingerprint.write(plan, plan.layout.report(fingerprint.FILE)))"
)


def _stage(root: Path, *cmd: str, check: bool = True):
    return run([sys.executable, "-m", "bml.cli", *cmd, "--overrides", OVERRIDES], cwd=root, check=check)


@pytest.mark.slow
def test_data_stages_compare_with_the_committed_fingerprint(tmp_path):
    root = make_data(tmp_path, N_CLIPS, SEED)
    pack = ("pack", "--dataset", "avdigits", "--recipe", "embedded")
    assert "no committed fingerprint" in _stage(root, *pack).stderr
    committed = Path(run([sys.executable, "-c", WRITE, OVERRIDES], cwd=root).stdout.strip())
    prints = json.loads((root / committed).read_text())
    assert set(prints) == {"clips/avdigits", "features/avdigits-embedded"}
    assert set(prints["features/avdigits-embedded"]["sha256"]) == {"train", "val", "test"}

    assert "identical to the committed fingerprint" in _stage(root, *pack).stderr
    assert "identical" in _stage(root, "manifest", "--dataset", "avdigits").stderr  # regenerated: same bytes

    real = prints["features/avdigits-embedded"]["sha256"]["train"]
    prints["features/avdigits-embedded"]["sha256"]["train"] = "0" * 64
    (root / committed).write_text(json.dumps(prints))
    warned = _stage(root, *pack).stderr
    assert "WARNING" in warned and real in warned and "0" * 64 in warned
    refused = _stage(root, *pack, "--data-check", "refuse", check=False)
    assert refused.returncode != 0 and "differ from the committed fingerprint" in refused.stderr


@pytest.mark.slow
def test_other_values_are_not_compared(tmp_path):
    """A fingerprint of other values (another n_clips) says nothing about this data."""
    root = make_data(tmp_path, N_CLIPS, SEED)
    committed = Path(run([sys.executable, "-c", WRITE, OVERRIDES], cwd=root).stdout.strip())
    prints = json.loads((root / committed).read_text())
    prints["features/avdigits-embedded"]["values"] = "another"
    (root / committed).write_text(json.dumps(prints))
    out = _stage(root, "pack", "--dataset", "avdigits", "--recipe", "embedded").stderr
    assert "no committed fingerprint for these values" in out
