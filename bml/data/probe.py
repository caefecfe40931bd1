"""What extraction would skip, found before extracting: `bml check-dataset --probe` decodes every listed clip
as extraction does (bml/data/decode.py: the recipe's span, the same checks and limits), in parallel, and keeps
only the reasons. A truncated FLV or an MP4 without its index passes the listing (it is there, it is not empty)
and is found here rather than hours into extraction. Spectrograms and flow are not computed.

The report sums the left-out clips up by reason, with a few examples each; every clip with its reason is
written to a file of the skipped.tsv form (clip_id, stage, reason), so a tree that lacks most of the release
prints a dozen lines, not 7,430.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bml.config import ConfigError
from bml.data.decode import Limits, decode_clips
from bml.data.extract import CLIPS_PER_PROCESS
from bml.data.ffmpeg import MediaError
from bml.data.manifest import Row, write_skipped

EXAMPLES = 3  # clips shown per reason
PROGRESS_EVERY = 10.0  # seconds between progress lines


def probe_clips(
    rows: list[Row], modalities: dict[str, str], settings: dict, limits: Limits, workers: int, log: Callable = print
) -> dict[str, str]:
    """{clip_id: why extraction would skip it} for the clips that would not decode, `workers` ffmpeg processes
    at a time (a chunk of clips each, as extraction runs them), with a progress line every PROGRESS_EVERY s."""
    chunks = [rows[i : i + CLIPS_PER_PROCESS] for i in range(0, len(rows), CLIPS_PER_PROCESS)]
    failed: dict[str, str] = {}
    done, t0, shown = 0, time.perf_counter(), time.perf_counter()

    def reasons(chunk: list[Row]) -> list[str | None]:  # the decoded arrays are dropped at once
        return [
            str(r) if isinstance(r, MediaError) else None for r in decode_clips(chunk, modalities, settings, limits)
        ]

    with ThreadPoolExecutor(max(1, workers)) as pool:  # threads: the work is in the ffmpeg processes
        for chunk, why in zip(chunks, pool.map(reasons, chunks), strict=True):
            failed.update({row.clip_id: " ".join(w.split()) for row, w in zip(chunk, why, strict=True) if w})
            done += len(chunk)
            if time.perf_counter() - shown >= PROGRESS_EVERY or done == len(rows):
                shown = time.perf_counter()
                log(f"probe: {done}/{len(rows)} clips opened in {shown - t0:.0f} s, {len(failed)} would be skipped")
    return failed


def reason_kind(reason: str) -> str:
    """What a reason says, without the file or the numbers: the key the summary counts by."""
    head, _, rest = reason.partition(": ")
    what = rest if "/" in head or head.startswith("clip ") else reason  # MediaError names the file (or clip) first
    return re.split(r"[:(;]", what, maxsplit=1)[0].strip() or reason


def summary_lines(skipped: list[dict], examples: int = EXAMPLES) -> list[str]:
    """One line per reason (stage and kind), most frequent first, with its count and a few example clips."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in skipped:
        groups.setdefault((s["stage"], reason_kind(s["reason"])), []).append(s)
    lines = []
    for (stage, kind), members in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        lines.append(f"  {len(members):>6}  {kind} ({stage})")
        lines += [f"          e.g. {s['clip_id']}: {s['reason']}" for s in members[:examples]]
    return lines


def check_release(
    name: str,
    params_dir: Path,
    pipeline: dict,
    root: str | None,
    probe: bool,
    recipe: str | None,
    workers: int,
    out: str | None,
) -> None:
    """`bml check-dataset`: list a release tree as the adapter does (with `probe`, decode its media too) and print
    the usable clips per split and what is left out, by reason; every clip left out goes to `out`."""
    from bml.data.adapters import list_release
    from bml.datasets import load_dataset
    from bml.layout import Layout

    dataset = load_dataset(name, params_dir, pipeline)
    if dataset.generated:
        raise ConfigError(f"dataset {name!r} is generated (bml manifest makes it), not read from a release")
    root = root or dataset.source.get("root")
    if not root:
        raise ConfigError(f"no root for {name!r}: pass --root DIR or set datasets.{name}.root in params/params.yaml")
    settings = {k: v for k, v in dataset.source.items() if k != "kind"}
    try:
        listing = list_release(dataset.source["adapter"], root, {**settings, "root": root})
    except ValueError as err:  # LayoutError: the root is not the release
        print(f"bml check-dataset: {root} is not a usable {name} release:\n{err}", file=sys.stderr)
        raise SystemExit(1) from None
    skipped = [{"clip_id": s.clip_id, "stage": "listing", "reason": s.reason} for s in listing.skipped]
    clips = listing.clips
    if probe:
        recipe = recipe or next(iter(dataset.recipes), None)
        if recipe not in dataset.recipes:
            raise ConfigError(
                f"--probe decodes with a recipe of {name!r}: {recipe!r} is not one of "
                f"{sorted(dataset.recipes)} (params/datasets/{name}.yaml)"
            )
        rows = [
            Row(c.clip_id, c.label, c.split, {m: str(p) for m, p in c.paths.items()}, c.start, c.end) for c in clips
        ]
        ex = pipeline["extract"]
        failed = probe_clips(
            rows,
            dataset.modalities,
            dataset.recipes[recipe],
            Limits(ex["min_decoded_share"], ex["max_decode_error_share"]),
            workers or ex["workers"],
            log=lambda line: print(line, file=sys.stderr),
        )
        skipped += [{"clip_id": cid, "stage": f"probe ({recipe})", "reason": why} for cid, why in failed.items()]
        clips = [c for c in clips if c.clip_id not in failed]
    counts = Counter(c.split for c in clips)
    print(
        f"{name} at {root}: {len(clips)} usable clips "
        f"({', '.join(f'{s} {counts[s]}' for s in ('train', 'val', 'test'))}), {len(listing.classes)} classes, "
        f"{len(skipped)} left out" + ("" if probe else " by the listing (media not opened: --probe opens them)")
    )
    if skipped:
        out_path = Path(out or Layout(pipeline["data_root"]).manifest(name, "check_dataset.tsv"))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        write_skipped(out_path, skipped)
        print("left out, by reason:")
        print("\n".join(summary_lines(skipped)))
        print(f"every clip left out, with its reason: {out_path}")
