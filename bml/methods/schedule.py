"""How a paper's schedule moves to a protocol of another length: one rule for every method."""

from __future__ import annotations


def scale_epoch(epoch: int, epochs: int, reference_epochs: int) -> int:
    """An epoch number of a schedule written for `reference_epochs` epochs, moved to a run of `epochs`.

    Papers give warm-ups, modulation windows and re-learning epochs for their own schedule (OGM-GE: 0-50 of
    100 epochs; Re-learning: after epochs 20, 40, 60 of 90). On a protocol of another length every method's
    schedule scales by the same rule, so each keeps its share of the run: epoch * epochs / reference_epochs,
    rounded half up, in exact integer arithmetic (2.5 -> 3, never float noise). Torch-free: the plan checks
    schedules with it before any job (bml/methods/checks.py), and the methods run them by it (bml/methods/base.py
    re-exports it), so it is code of every training stage.
    """
    if reference_epochs < 1 or epochs < 1 or epoch < 0:
        raise ValueError(
            f"scale_epoch needs epoch >= 0 and epochs, reference_epochs >= 1; got {epoch}, {epochs}, {reference_epochs}"
        )
    return (2 * epoch * epochs + reference_epochs) // (2 * reference_epochs)
