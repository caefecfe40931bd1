"""Every balancing method resumes from its checkpoint to the same numbers as a run that never stopped."""

from __future__ import annotations

import pytest
import torch
from test_train import QUIET, tiny_config

import bml.train
from bml.train import WALL_TIMES, train

# each method's settings that make it act within 3 tiny epochs (no warm-up)
ACTIVE = {"ogm_ge": [], "opm": ["method.warmup_epochs=0"], "mmpareto": [], "relearning": []}


class Interrupted(Exception):
    """Raised right after the epoch-1 checkpoint is written: the run stops as a killed one would."""


@pytest.mark.parametrize("method", sorted(ACTIVE))
def test_interrupted_run_resumes_bit_identical(packed_avdigits, tmp_path, monkeypatch, method):
    whole = train(tiny_config(packed_avdigits, tmp_path / "whole", method, epochs=3, sets=ACTIVE[method]), log=QUIET)

    original = bml.train.save_atomic

    def stop_after_epoch_1(obj, path):
        original(obj, path)
        if path.name == bml.train.CHECKPOINT and obj["epoch"] == 1:
            raise Interrupted

    cut_config = tiny_config(packed_avdigits, tmp_path / "cut", method, epochs=3, sets=ACTIVE[method])
    monkeypatch.setattr(bml.train, "save_atomic", stop_after_epoch_1)
    with pytest.raises(Interrupted):
        train(cut_config, log=QUIET)
    monkeypatch.setattr(bml.train, "save_atomic", original)
    torch.manual_seed(12345)  # the resumed run must not depend on the process's RNG state
    resumed = train(cut_config, log=QUIET)
    assert resumed["test"] == whole["test"]
    a = torch.load(tmp_path / "whole" / "avdigits/embedded/concat" / method / "seed0/checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "avdigits/embedded/concat" / method / "seed0/checkpoint.pt", weights_only=False)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if k not in WALL_TIMES} for r in rows]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
