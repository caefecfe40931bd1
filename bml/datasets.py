"""A dataset as data: params/datasets/<name>.yaml (its source, its modalities and their feature recipes),
read and checked before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bml.catalog import MODALITY_KINDS
from bml.config import PARAMS_DIR, SCHEMAS_DIR, ConfigError, check, merge, read_yaml, refuse, schema_problems
from bml.kinds import KINDS


def names_in(params_dir: Path, folder: str) -> list[str]:
    """The names of the YAML files of one params/ folder (datasets, protocols, methods)."""
    return sorted(p.stem for p in (params_dir / folder).glob("*.yaml"))


def dataset_titles(params_dir: Path = PARAMS_DIR) -> dict[str, str]:
    """{dataset: how tables and figures name it}, from each params/datasets/<name>.yaml's `title`."""
    return {n: read_yaml(params_dir / "datasets" / f"{n}.yaml")["title"] for n in names_in(params_dir, "datasets")}


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str  # how tables and figures name it
    description: str
    source: dict  # the `source:` section with params.yaml's datasets.<name> merged in
    modalities: dict[str, str]  # modality name -> kind, in the dataset's order
    recipes: dict[str, dict]  # recipe name -> {span, <modality>: settings}

    @property
    def generated(self) -> bool:
        return self.source["kind"] == "generator"


@dataclass(frozen=True)
class Recipe:
    dataset: str
    name: str
    values: dict  # the source, modalities and this recipe: what decides the features
    n_shards: int

    @property
    def key(self) -> str:
        return f"{self.dataset}-{self.name}"


def load_dataset(name: str, params_dir: Path, pipeline: dict) -> Dataset:
    path = params_dir / "datasets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown dataset {name!r}: no {path}; datasets: {names_in(params_dir, 'datasets')}")
    spec = check(read_yaml(path), "dataset.schema.yaml", path, "dataset")
    source = merge(spec["source"], pipeline.get("datasets", {}).get(name) or {})
    problems = [
        f"key 'modalities.{m}': kind {d['kind']!r} is not one of {sorted(MODALITY_KINDS)}"
        for m, d in spec["modalities"].items()
        if d["kind"] not in MODALITY_KINDS
    ]
    presets = read_yaml(params_dir / "audio_presets.yaml")
    for rname, recipe in spec.get("recipes", {}).items():
        missing = sorted(set(spec["modalities"]) - set(recipe))
        extra = sorted(set(recipe) - set(spec["modalities"]) - {"span"})
        if missing or extra:
            problems.append(
                f"key 'recipes.{rname}': needs settings for every modality {list(spec['modalities'])}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        for m, kind in ((m, d["kind"]) for m, d in spec["modalities"].items() if m in recipe):
            problems += [
                f"key 'recipes.{rname}.{m}': {p}"
                for p in schema_problems(read_yaml(SCHEMAS_DIR / "recipe.schema.yaml")["$defs"][kind], recipe[m])
            ]
            if KINDS[kind].uses_preset and recipe[m].get("preset") not in presets:
                problems.append(
                    f"key 'recipes.{rname}.{m}.preset': {recipe[m].get('preset')!r} is not a preset of "
                    f"params/audio_presets.yaml; choose one of {sorted(presets)}"
                )
    if spec["source"]["kind"] == "generator":
        presets = source.get("settings", {}).get("presets", {})
        if source.get("preset") not in presets:
            problems.append(
                f"key 'source.preset': {source.get('preset')!r} is not allowed; choose one of {sorted(presets)}"
            )
    refuse(path, "dataset", problems)
    return Dataset(
        name,
        spec["title"],
        spec["description"],
        source,
        {m: d["kind"] for m, d in spec["modalities"].items()},
        spec.get("recipes", {}),
    )
