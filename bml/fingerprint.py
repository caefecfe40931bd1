"""Data you can check: the sha256 of what the data stages made, committed beside the results it produced.

`bml report` writes `fingerprints.json` into the report folder: for each dataset of the plan, the digest of its
generated clips (a generator's output; a release on disk is the user's own), and for each feature recipe the
sha256 of every packed split, each under the hash of the values that made it. `bml manifest` and `bml pack`
compare what they just made with that file, before anything trains on it: the same values must give the same
bytes on any machine (bml/runtime.py), so a difference is named with both hashes; under `--data-check refuse`
the stage fails instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from bml.data.manifest import read_manifest

FILE = "fingerprints.json"
log = logging.getLogger(__name__)


class DataMismatch(RuntimeError):
    """What a data stage made differs from the committed fingerprint of the same values."""


def clips_digest(manifest_path: str | Path) -> str:
    """One sha256 over every media file a manifest lists, in clip order (file by file, so a 1 GB release is
    never read whole into memory)."""
    rows, _ = read_manifest(manifest_path)
    total = hashlib.sha256()
    for path in sorted({p for row in rows for p in row.paths.values()}):
        file_hash = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                file_hash.update(block)
        total.update(f"{Path(path).name} {file_hash.hexdigest()}\n".encode())
    return total.hexdigest()


def packed_digests(packed_dir: str | Path) -> dict[str, str]:
    """Each packed split's sha256, as `bml pack` recorded it beside the split."""
    return {p.stem: json.loads(p.read_text())["sha256"] for p in sorted(Path(packed_dir).glob("*.json"))}


def collect(plan) -> dict[str, dict]:
    """The fingerprint of every data stage of the plan whose outputs are on disk."""
    from bml.plan import digest

    found, lay = {}, plan.layout
    for name in sorted(plan.datasets):
        manifest = Path(lay.manifest(name))
        if plan.datasets[name].generated and manifest.exists():
            values = digest(plan.dataset_values(name))
            found[f"clips/{name}"] = {"values": values, "sha256": clips_digest(manifest)}
    for recipe in sorted(plan.recipes, key=lambda r: r.key):
        packed = Path(lay.packed_dir(recipe.dataset, recipe.name))
        if packed.is_dir() and any(packed.glob("*.json")):
            found[f"features/{recipe.key}"] = {"values": digest(recipe.values), "sha256": packed_digests(packed)}
    return found


def write(plan, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(collect(plan), indent=2, sort_keys=True) + "\n")
    return path


def check(committed_file: str | Path, key: str, values: str, made, refuse: bool = False) -> str:
    """Compare what a stage `made` with the committed fingerprint of `key`; returns the line to print."""
    path = Path(committed_file)
    committed = json.loads(path.read_text()).get(key) if path.exists() else None
    if committed is None or committed["values"] != values:
        return f"bml: {key}: no committed fingerprint for these values in {path} (nothing to compare)"
    if committed["sha256"] == made:
        return f"bml: {key}: identical to the committed fingerprint ({path})"
    message = (
        f"{key}: the data made here differ from the committed fingerprint of the same values ({path}): "
        f"made {json.dumps(made, sort_keys=True)}, committed {json.dumps(committed['sha256'], sort_keys=True)}; "
        f"numbers trained on it will not be the committed ones"
    )
    if refuse:
        raise DataMismatch(message)
    return f"bml: WARNING: {message}"
