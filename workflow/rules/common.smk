# Paths and helpers shared by the rules. Every path is derived from the config, never written twice.

DATASET = "avdigits"
ROOT = f"{config['data_root']}/{DATASET}"
SHARDS = list(range(config["extract"]["n_shards"]))
SPLITS = ["train", "val", "test"]


def dataset_dir(*parts):
    return "/".join([ROOT, *parts])


def packed_splits():
    return [dataset_dir("packed", f"{split}.npy") for split in SPLITS] + [dataset_dir("packed", "skipped.tsv")]
