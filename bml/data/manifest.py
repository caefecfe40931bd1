"""The manifest: one row per clip (id, label, split, the span used, one file per modality), checked before
any feature is extracted, so that nothing wrong gets into the packed data.

    data/<dataset>/manifest.csv     clip_id,label,split,start,end,path_<modality>...   (sorted by clip_id)
    data/<dataset>/manifest.json    {"dataset", "classes": [...], "modalities": {...}}
    data/<dataset>/listing_skipped.tsv   clips the release listing could not use (clip_id, stage, reason)

Both a generator and a release adapter (bml/data/adapters/) end here, through `write_manifest`, which
refuses the whole manifest with one message listing every problem and its row: duplicate or unsafe ids
(path separators, '..', longer than the packed field), labels that are not indices into the class list,
unknown splits, a split without clips, missing files, spans that are not seconds. `read_manifest` checks
again what it reads (a manifest edited by hand).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bml.config import ConfigError
from bml.kinds import KINDS
from bml.layout import SPLITS

MAX_ID = 64  # characters: the packed records' clip_id field holds this many (bml/data/pack.py)
# A clip id may start with '-' or '_': YouTube ids (Kinetics, VGGSound, AVE) use the base64url alphabet, and 690 of
# the 17,396 Kinetics-Sounds list names start with one of them (bml/data/lists/kinetics_sounds/). Never with '.'.
SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
SKIPPED_FIELDS = ["clip_id", "stage", "reason"]


class ManifestError(ConfigError):
    """A manifest bml refuses; the message lists every problem with its row."""


@dataclass(frozen=True)
class Row:
    clip_id: str
    label: int
    split: str
    paths: dict[str, str]  # modality -> absolute file path
    start: float = 0.0
    end: float | None = None


def problems(
    rows: list[dict], classes: list[str], modalities: dict[str, str] | list[str], check_files: bool = True
) -> list[str]:
    """Every problem of raw manifest rows (dicts of strings or values), one line each, naming the row.
    `modalities` maps names to kinds (a list of names: every kind `file`); a path may be a folder where its
    kind reads one (flow: the clip's u/ folder of a precomputed flow release)."""
    kinds = modalities if isinstance(modalities, dict) else dict.fromkeys(modalities, "file")
    found, seen = [], {}
    for i, row in enumerate(rows, start=2):  # row 1 is the CSV header
        where = f"row {i} ({row.get('clip_id')!r})"
        cid = str(row.get("clip_id", ""))
        if not SAFE_ID.match(cid) or ".." in cid:
            found.append(
                f"{where}: clip_id must be letters, digits, '_', '-' or '.', not start with '.' and hold no '..'"
            )
        if len(cid) > MAX_ID:
            found.append(f"{where}: clip_id has {len(cid)} characters; at most {MAX_ID} fit the packed format")
        if cid in seen:
            found.append(f"{where}: clip_id repeats row {seen[cid]}")
        seen.setdefault(cid, i)
        try:
            label = int(str(row.get("label")).strip())
            if str(label) != str(row.get("label")).strip() or isinstance(row.get("label"), bool):
                raise ValueError
        except ValueError:
            found.append(f"{where}: label {row.get('label')!r} is not an integer index into the class list")
        else:
            if not 0 <= label < len(classes):
                found.append(f"{where}: label {label} is outside the class list (0..{len(classes) - 1})")
        if row.get("split") not in SPLITS:
            found.append(f"{where}: split {row.get('split')!r} is not one of {list(SPLITS)}")
        for m, kind in kinds.items():
            path = row.get(f"path_{m}")
            if not path:
                found.append(f"{where}: no file for modality {m!r} (column path_{m})")
            elif check_files and not (Path(path).is_file() or (kind in KINDS and KINDS[kind].reads_folder(path))):
                found.append(f"{where}: {m} file {path} does not exist")
        span = {}
        for key in ("start", "end"):
            value = row.get(key)
            if value not in (None, ""):
                try:
                    seconds = float(value)
                except (TypeError, ValueError):
                    seconds = math.nan
                if math.isfinite(seconds) and seconds >= 0:
                    span[key] = seconds
                else:
                    found.append(f"{where}: {key} {value!r} is not a number of seconds >= 0")
        if "end" in span and span["end"] <= span.get("start", 0.0):
            found.append(f"{where}: end {span['end']} s is not after start {span.get('start', 0.0)} s")
    present = {r.get("split") for r in rows}
    found += [f"split {s!r} has no clip" for s in SPLITS if s not in present]
    return found


def write_manifest(
    out_dir: str | Path,
    dataset: str,
    rows: list[dict],
    classes: list[str],
    modalities: dict[str, str],
    skipped: list[dict] | None = None,
) -> Path:
    """Check and write manifest.csv, manifest.json and listing_skipped.tsv; ManifestError lists every problem."""
    out_dir = Path(out_dir)
    found = problems(rows, classes, modalities)
    if found:
        shown = found[:50] + ([f"... and {len(found) - 50} more"] if len(found) > 50 else [])
        raise ManifestError(
            f"{out_dir / 'manifest.csv'}: {len(found)} problem(s) in the manifest of {dataset!r}:\n"
            + "\n".join(f"  - {p}" for p in shown)
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = ["clip_id", "label", "split", "start", "end"] + [f"path_{m}" for m in modalities]
    rows = sorted(rows, key=lambda r: r["clip_id"])
    _write_tsv(out_dir / "listing_skipped.tsv", SKIPPED_FIELDS, skipped or [], delimiter="\t")
    (out_dir / "manifest.json").write_text(
        json.dumps(
            {
                "dataset": dataset,
                "classes": classes,
                "modalities": modalities,
                "n_clips": len(rows),
                "n_listing_skipped": len(skipped or []),
            },
            indent=2,
        )
        + "\n"
    )
    _write_tsv(out_dir / "manifest.csv", fields, [{k: r.get(k, "") for k in fields} for r in rows], delimiter=",")
    return out_dir / "manifest.csv"  # written last: its presence means the manifest is complete


def _write_tsv(path: Path, fields: list[str], rows: list[dict], delimiter: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> tuple[list[Row], dict]:
    """The rows of a written manifest (sorted by clip_id) and its metadata (classes, modalities)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found; run the manifest stage first (bml manifest)")
    meta = read_manifest_meta(path.with_suffix(".json"))
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # a BOM (Excel's "CSV UTF-8") is accepted
            raw = list(csv.DictReader(f))
    except UnicodeDecodeError as err:
        why = f"not UTF-8 text ({err.reason} at byte {err.start}); save it as CSV UTF-8"
        raise ManifestError(f"{path}: {why}") from None
    found = problems(raw, meta["classes"], meta["modalities"], check_files=False)  # a hand edit since writing
    if found:
        raise ManifestError(f"{path}: {len(found)} problem(s):\n" + "\n".join(f"  - {p}" for p in found[:50]))
    rows = [
        Row(
            r["clip_id"],
            int(r["label"]),
            r["split"],
            {m: r[f"path_{m}"] for m in meta["modalities"]},
            float(r.get("start") or 0.0),
            float(r["end"]) if r.get("end") else None,
        )
        for r in raw
    ]
    return rows, meta


def read_manifest_meta(path: Path) -> dict:
    """manifest.json (a BOM accepted); ManifestError, naming it, when it is missing, not JSON or not bml's."""
    if not path.is_file():
        raise ManifestError(f"{path}: not found beside its manifest.csv; write the manifest again (bml manifest)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not valid JSON ({err}); write the manifest again (bml manifest)") from None
    missing = [k for k in ("classes", "modalities") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ManifestError(f"{path}: no {', '.join(missing)}: not the metadata bml manifest writes; write it again")
    return meta


def read_skipped(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def write_skipped(path: str | Path, rows: list[dict]) -> None:
    _write_tsv(Path(path), SKIPPED_FIELDS, sorted(rows, key=lambda s: (s["clip_id"], s["stage"])), delimiter="\t")
