"""Where everything lives: every path bml reads or writes, relative to the project root.

Nothing else writes a run directory, a shard or a packed file name: the Snakefile, dvc.yaml and the `bml`
commands all take their paths from one Layout (bml/plan.py makes it from params.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")  # every dataset's splits, in this order: manifests, packed files, metrics


@dataclass(frozen=True)
class Layout:
    """Where everything lives, relative to the working directory (the project root)."""

    data_root: str = "data"
    results_root: str = "results"
    report_dir: str = "reports"

    def dataset_dir(self, dataset: str) -> str:
        return f"{self.data_root}/{dataset}"

    def manifest(self, dataset: str, name: str = "manifest.csv") -> str:
        """The manifest, or one of the files written beside it (manifest.json, listing_skipped.tsv)."""
        return f"{self.data_root}/{dataset}/{name}"

    def raw_dir(self, dataset: str) -> str:  # what a generator writes (the clips)
        return f"{self.data_root}/{dataset}/raw"

    def recipe_dir(self, dataset: str, recipe: str) -> str:
        return f"{self.data_root}/{dataset}/{recipe}"

    def shard(self, dataset: str, recipe: str, shard: int, suffix: str = ".npy") -> str:
        """A shard's records (.npy) or its clips' status (.tsv)."""
        return f"{self.data_root}/{dataset}/{recipe}/shards/shard{shard}{suffix}"

    def packed_dir(self, dataset: str, recipe: str) -> str:
        return f"{self.data_root}/{dataset}/{recipe}/packed"

    def packed(self, dataset: str, recipe: str, name: str) -> str:
        """A file of the packed folder: <split>.npy, <split>.json, skipped.tsv."""
        return f"{self.data_root}/{dataset}/{recipe}/packed/{name}"

    def summary(self, dataset: str, recipe: str) -> str:
        return f"{self.data_root}/{dataset}/{recipe}/summary.json"

    def run_dir(self, dataset: str, protocol: str, fusion: str, method: str, seed: int) -> str:
        return f"{self.results_root}/{dataset}/{protocol}/{fusion}/{method}/seed{seed}"

    def metrics(self, dataset: str, protocol: str, fusion: str, method: str, seed: int) -> str:
        return f"{self.run_dir(dataset, protocol, fusion, method, seed)}/metrics.json"

    def report(self, name: str) -> str:
        return f"{self.report_dir}/{name}"

    @property
    def run_glob(self) -> str:  # every run directory under results_root (read back by bml/results.py)
        return "*/*/*/*/seed*"
