import os

# Paths and helpers shared by the rules. Every path is derived from the config, never written twice.

DATASET = "avdigits"
ROOT = f"{config['data_root']}/{DATASET}"
SHARDS = list(range(config["extract"]["n_shards"]))
SPLITS = ["train", "val", "test"]


def dataset_dir(*parts):
    return "/".join([ROOT, *parts])


def packed_splits():
    return [dataset_dir("packed", f"{split}.npy") for split in SPLITS] + [dataset_dir("packed", "skipped.tsv")]


def parent_of(kind, name=0):
    """A params function giving the folder that holds a rule's input or output `name` (a shard's parent),
    so that no path prefix is written twice (snakemake --lint)."""

    def folder(wildcards, input, output):
        files = {"input": input, "output": output}[kind]
        item = files[name] if isinstance(name, int) else getattr(files, name)
        first = item if isinstance(item, str) else item[0]
        return os.path.dirname(first)

    return folder
