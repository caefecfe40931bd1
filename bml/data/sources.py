"""Where a dataset's clips come from: a generator (avdigits, made here) or a release on disk (an adapter in
bml/data/adapters/ reads it). Either way the result is data/<dataset>/manifest.csv (bml/data/manifest.py).
"""

from __future__ import annotations

from pathlib import Path

from bml.config import ConfigError
from bml.data.manifest import write_manifest
from bml.datasets import Dataset
from bml.layout import Layout

GENERATORS = ("avdigits",)


def generator_settings(source: dict, where: str = "source") -> dict:
    """A generator's settings for the chosen preset: the shared `common` block with the preset's knobs on top."""
    presets = source["settings"]["presets"]
    if source["preset"] not in presets:
        raise ConfigError(f"{where}: unknown preset {source['preset']!r}; choose one of {sorted(presets)}")
    return {**source["settings"]["common"], **presets[source["preset"]], "preset": source["preset"]}


def build_manifest(dataset: Dataset, layout: Layout, workers: int = 1, log=print) -> Path:
    """Generate the clips or list the release, then check and write the dataset's manifest."""
    out = Path(layout.dataset_dir(dataset.name))
    if dataset.generated:
        rows, classes, skipped = _generate(dataset, Path(layout.raw_dir(dataset.name)), workers, log)
    else:
        rows, classes, skipped = _list_release(dataset)
    path = write_manifest(out, dataset.name, rows, classes, dataset.modalities, skipped)
    log(
        f"{dataset.name}: {len(rows)} clips in {path}"
        + (f", {len(skipped)} left out (listed in {out / 'listing_skipped.tsv'})" if skipped else "")
    )
    return path


def _generate(dataset: Dataset, raw: Path, workers: int, log) -> tuple[list[dict], list[str], list[dict]]:
    source = dataset.source
    if source.get("generator") not in GENERATORS:
        raise ConfigError(
            f"dataset {dataset.name!r}: unknown generator {source.get('generator')!r}; choose one of {list(GENERATORS)}"
        )
    from bml.data.avdigits import generate, read_generated

    settings = generator_settings(source, f"params/datasets/{dataset.name}.yaml: source")
    generate(raw, n_clips=source["n_clips"], seed=source["seed"], settings=settings, workers=workers, log=log)
    rows = [
        {
            "clip_id": r["clip_id"],
            "label": r["label"],
            "split": r["split"],
            "start": 0.0,
            "end": "",
            **{f"path_{m}": r["path"] for m in dataset.modalities},
        }
        for r in read_generated(raw)
    ]
    return rows, [str(d) for d in range(10)], []


def _list_release(dataset: Dataset) -> tuple[list[dict], list[str], list[dict]]:
    from bml.data.adapters import list_release

    settings = {k: v for k, v in dataset.source.items() if k != "kind"}
    try:
        listing = list_release(dataset.source["adapter"], dataset.source["root"], settings)
    except ValueError as err:  # a wrong layout (LayoutError) or a bad setting: the adapter's message says which
        raise ConfigError(f"dataset {dataset.name!r}: {err}") from None
    rows = [
        {
            "clip_id": c.clip_id,
            "label": c.label,
            "split": c.split,
            "start": c.start,
            "end": "" if c.end is None else c.end,
            **{f"path_{m}": str(p) for m, p in c.paths.items()},
        }
        for c in listing.clips
    ]
    skipped = [{"clip_id": s.clip_id, "stage": "listing", "reason": s.reason} for s in listing.skipped]
    return rows, listing.classes, skipped
