"""Which modalities finished runs report, read from their metric keys (probe_<m>, acc_zero_<m>, ...) and
history columns, in the dataset's order: the columns of the report's tables and the colours of its figures.

A modality is whatever a run's keys name, so a dataset with a third modality needs nothing here; the
uni-modal reference of modality m is the m_only run.
"""

from __future__ import annotations

from bml.catalog import ENCODER_PART
from bml.methods import UNIMODAL_SUFFIX
from bml.results import Run

# Metric and history-column prefixes that are followed by a modality's name (bml/evaluate.py, bml/train.py).
# Longest first, so that acc_zero_audio is read as the modality "audio", not "zero_audio".
MODALITY_PREFIXES = ("acc_zero_", "acc_noise_", "acc_fgm_", "acc_pgd_", "probe_", "shapley_", "val_probe_", "val_acc_")


def run_modalities(run: Run) -> list[str]:
    """The modalities one run reports, in the order its metrics.json and history.csv name them."""
    keys = [k for part in run.test.values() if isinstance(part, dict) for k in part]
    keys += [k for row in run.history for k in row]
    names = []
    for key in keys:
        prefix = next((p for p in MODALITY_PREFIXES if key.startswith(p) and len(key) > len(p)), None)
        if prefix is not None and ENCODER_PART not in key:  # probe_audio.unimodal: a further encoder of audio
            names.append(key[len(prefix) :])
    if run.method.endswith(UNIMODAL_SUFFIX) and len(run.method) > len(UNIMODAL_SUFFIX):
        names.append(run.method[: -len(UNIMODAL_SUFFIX)])
    return list(dict.fromkeys(names))


def modalities_of(runs: list[Run]) -> list[str]:
    """Every modality these runs report, in the dataset's order: the runs that see the most modalities are read
    first (evaluate.py writes metrics in the dataset's modality order), so avdigits gives audio, visual."""
    per_run = sorted((run_modalities(r) for r in runs), key=len, reverse=True)  # sorted() is stable
    return list(dict.fromkeys(m for names in per_run for m in names))
