import os
import shutil

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


# ---- training --------------------------------------------------------------------------------------
RESULTS = config["results_root"]
REPORT = config["report"]["out_dir"]
RUN_DIR = os.path.join(RESULTS, "{dataset}", "{protocol}", "{fusion}", "{method}", "seed{seed}")
# A training job takes one GPU where there is one; on a CPU-only machine it takes none, so that
# --resources gpu=N never serialises CPU jobs.
GPUS_PER_RUN = 1 if shutil.which("nvidia-smi") else 0


def train_targets():
    """metrics.json of every (method, fusion) cell of the training matrix and the ensemble, for every seed."""
    t = config["train"]
    cells = [(run["method"], run["fusion"]) for run in t["runs"]] + ([("ensemble", "none")] if t["ensemble"] else [])
    return [
        f"{RESULTS}/{t['dataset']}/{t['protocol']}/{fusion}/{method}/seed{seed}/metrics.json"
        for method, fusion in cells
        for seed in t["seeds"]
    ]


def train_inputs(wildcards):
    """The packed splits, and for the ensemble the metrics of the uni-modal runs it combines."""
    packed = [f"{config['data_root']}/{wildcards.dataset}/packed/{split}.npy" for split in SPLITS]
    if wildcards.method != "ensemble":
        return packed
    return packed + [
        os.path.join(RUN_DIR.format(**{**wildcards, "method": member, "fusion": "none"}), "metrics.json")
        for member in ("audio_only", "visual_only")
    ]
