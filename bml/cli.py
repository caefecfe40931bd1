"""The `bml` command: the entry points that Snakemake rules, DVC stages and users all call.

Every pipeline command resolves the same plan (bml/plan.py) from params/ and the same overrides, so a
stage does the same thing from any of the three: Snakemake passes its --config overrides (`--overrides`)
and the hash it planned (`--expect-hash`, refused if params/ changed since), DVC runs it as it stands.
Heavy imports happen inside the commands: planning and extraction never pay for importing torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _plan(args: argparse.Namespace):
    from bml.plan import load_plan

    return load_plan(args.params_dir, json.loads(args.overrides) if args.overrides else None)


def _expect(args: argparse.Namespace, what: str, actual: str) -> None:
    from bml.config import ConfigError

    if args.expect_hash and args.expect_hash != actual:
        raise ConfigError(
            f"{what}: its values changed since the workflow was planned (hash {args.expect_hash}, "
            f"now {actual}); start the workflow again"
        )


def cmd_plan(args: argparse.Namespace) -> None:
    from bml.dvc_stages import check_dvc_yaml, dvc_yaml, write_witnesses
    from bml.plan import digest

    plan = _plan(args)
    if args.write:
        n = write_witnesses(plan, Path(args.write))
        print(f"bml plan: {n} stage witnesses in {args.write}")
    if args.check_dvc:
        check_dvc_yaml(plan, Path(args.check_dvc))
    if args.dvc_yaml:
        Path(args.dvc_yaml).write_text(dvc_yaml(plan))
        print(f"bml plan: wrote {args.dvc_yaml} ({len(plan.cells)} training stages)")
    if not (args.write or args.check_dvc or args.dvc_yaml):
        for d in plan.datasets:
            print(f"dataset {d}: manifest {plan.layout.manifest(d)}  [{digest(plan.dataset_values(d))}]")
        for r in plan.recipes:
            print(
                f"features {r.key}: {r.n_shards} shards -> {plan.layout.packed_dir(r.dataset, r.name)}  "
                f"[{digest(r.values)}]"
            )
        for c in plan.cells:
            print(f"cell {c.name}: {c.run_dir}  [{c.hash}]" + (f"  needs {list(c.requires)}" if c.requires else ""))
        print(f"{len(plan.cells)} cells")


def cmd_check_config(args: argparse.Namespace) -> None:
    plan = _plan(args)
    print(
        f"{Path(args.params_dir) / 'params.yaml'}: valid ({len(plan.cells)} cells, {len(plan.recipes)} feature "
        f"recipes, datasets {sorted(plan.datasets)})"
    )


def cmd_manifest(args: argparse.Namespace) -> None:
    from bml.data.sources import build_manifest
    from bml.plan import digest

    plan = _plan(args)
    if args.dataset not in plan.datasets:
        raise SystemExit(f"bml manifest: dataset {args.dataset!r} is not in the matrix; it has {sorted(plan.datasets)}")
    _expect(args, f"dataset {args.dataset}", digest(plan.dataset_values(args.dataset)))
    build_manifest(
        plan.datasets[args.dataset], plan.layout, workers=args.workers or plan.pipeline["extract"]["workers"]
    )
    if plan.datasets[args.dataset].generated:
        from bml import fingerprint

        made = fingerprint.clips_digest(plan.layout.manifest(args.dataset))
        values = digest(plan.dataset_values(args.dataset))
        _check_data(args, plan, f"clips/{args.dataset}", values, made)


def _check_data(args: argparse.Namespace, plan, key: str, values: str, made) -> None:
    """Say whether a data stage made what the committed results were trained on (bml/fingerprint.py)."""
    from bml import fingerprint

    committed = plan.layout.report(fingerprint.FILE)
    try:
        print(fingerprint.check(committed, key, values, made, refuse=args.data_check == "refuse"), file=sys.stderr)
    except fingerprint.DataMismatch as err:
        raise SystemExit(f"bml: error: {err}") from err


def cmd_extract(args: argparse.Namespace) -> None:
    from bml.data.decode import Limits
    from bml.data.extract import extract_shard, shard_rows
    from bml.data.manifest import read_manifest
    from bml.plan import digest

    plan = _plan(args)
    recipe = plan.recipe(args.dataset, args.recipe)
    _expect(args, f"features {recipe.key}", digest(recipe.values))
    rows, _ = read_manifest(plan.layout.manifest(args.dataset))
    ex = plan.pipeline["extract"]
    shards = range(recipe.n_shards) if args.shard is None else [args.shard]
    for k in shards:
        statuses = extract_shard(
            shard_rows(rows, k, recipe.n_shards),
            plan.datasets[args.dataset].modalities,
            recipe.values["settings"],
            plan.layout.shard(args.dataset, args.recipe, k),
            Limits(ex["min_decoded_share"], ex["max_decode_error_share"]),
            workers=args.workers,
        )
        bad = sum(s["status"] != "ok" for s in statuses)
        print(f"extract {recipe.key} shard {k}: {len(statuses) - bad} clips, {bad} skipped")


def cmd_pack(args: argparse.Namespace) -> None:
    from bml import fingerprint
    from bml.data.pack import pack
    from bml.plan import digest

    plan = _plan(args)
    recipe = plan.recipe(args.dataset, args.recipe)
    lay = plan.layout
    pack(
        lay.manifest(args.dataset),
        [lay.shard(args.dataset, args.recipe, k) for k in range(recipe.n_shards)],
        lay.packed_dir(args.dataset, args.recipe),
        Path(lay.recipe_dir(args.dataset, args.recipe)) / "summary.json",
    )
    made = fingerprint.packed_digests(lay.packed_dir(args.dataset, args.recipe))
    _check_data(args, plan, f"features/{recipe.key}", digest(recipe.values), made)


def resolve_train_cell(args: argparse.Namespace):
    """The cell `bml train` runs: by name from the matrix (that cell alone), or from --dataset/--protocol/...
    with --set."""
    from bml.config import ConfigError
    from bml.datasets import load_dataset
    from bml.plan import layout_of, load_cell, load_pipeline, resolve_cell

    overrides = json.loads(args.overrides) if args.overrides else None
    if args.cell:
        if args.set:
            raise ConfigError(
                "--set changes a cell's values; use it with --dataset/--protocol/--method/--fusion/"
                "--seed, not with --cell (a matrix cell is what params/ says)"
            )
        if args.results_root:  # paths are not part of a cell's values: its hash stays what was planned
            overrides = {**(overrides or {}), "results_root": args.results_root}
        return load_cell(args.cell, args.params_dir, overrides)
    pipeline = load_pipeline(Path(args.params_dir), overrides)
    dataset = load_dataset(args.dataset, Path(args.params_dir), pipeline)
    return resolve_cell(
        dataset,
        args.protocol,
        args.method,
        args.fusion,
        args.seed,
        Path(args.params_dir),
        pipeline,
        layout_of(pipeline, Path(args.params_dir), args.results_root),
        tuple(args.set or ()),
    )


def cmd_train(args: argparse.Namespace) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    logging.getLogger("bml").setLevel(logging.INFO)  # the loop's progress; other libraries' warnings only
    cell = resolve_train_cell(args)
    _expect(args, f"cell {cell.name}", cell.hash)
    from bml.gpu import claim_gpu, describe, require_slurm_gpus

    try:
        require_slurm_gpus(args.gpus)
    except RuntimeError as err:
        raise SystemExit(f"bml train: error: {err}") from err
    if args.device in ("auto", "cuda"):
        claim_gpu()  # before torch is imported: CUDA reads CUDA_VISIBLE_DEVICES once
        print(f"bml train: {describe()}", file=sys.stderr)
    from bml.runtime import configure_torch
    from bml.train import TrainingError, train

    configure_torch()  # one compute thread whatever --threads grants: the numbers must not depend on it
    try:
        result = train(cell.config, device=args.device, restart=args.restart, replace_stale=bool(args.cell))
    except TrainingError as err:
        print(f"bml train: error: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    best = result["test"]["best"]
    print(
        f"{cell.name}: test acc {best['acc']:.2f} (best on val, epoch {result['best_epoch']}), "
        f"last epoch {result['test']['last']['acc']:.2f}"
    )


def cmd_report(args: argparse.Namespace) -> None:
    from bml import fingerprint
    from bml.config import read_yaml
    from bml.report import build_report
    from bml.scorecard import load_claims
    from bml.table_rows import Settings

    plan = _plan(args)
    r = plan.pipeline["report"]
    seeds = tuple(sorted({c.seed for c in plan.cells}))
    settings = Settings(baseline=r["baseline"], test=r["test"], alpha=r["alpha"], which=r["which"], seeds=seeds)
    cells = {str(Path(c.run_dir)) for c in plan.cells}  # the matrix's runs only, not every run on disk
    published = read_yaml(plan.params_dir / "published.yaml")
    claims = load_claims(plan.params_dir, published)  # a bad claim is refused before any table is built
    build_report(plan.layout.results_root, plan.layout.report_dir, published, settings, only=cells, claims=claims)
    fingerprint.write(plan, plan.layout.report(fingerprint.FILE))


def cmd_datasets(args: argparse.Namespace) -> None:
    from bml.data.adapters import ADAPTERS, adapter

    for name in sorted(ADAPTERS):
        print(f"{name}:\n" + "\n".join(f"  {line}" for line in adapter(name).EXPECTS.strip().splitlines()))


def cmd_check_dataset(args: argparse.Namespace) -> None:
    from bml.data.probe import check_release
    from bml.plan import load_pipeline

    pipeline = load_pipeline(Path(args.params_dir), json.loads(args.overrides) if args.overrides else None)
    check_release(
        args.dataset, Path(args.params_dir), pipeline, args.root, args.probe, args.recipe, args.workers, args.out
    )


def cmd_runtime(args: argparse.Namespace) -> None:
    from bml import runtime

    runtime.configure_torch()
    print(json.dumps(runtime.provenance(), indent=2))


def build_parser() -> argparse.ArgumentParser:
    from bml.config import PARAMS_DIR

    parser = argparse.ArgumentParser(prog="bml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    # the params/ of the project the command runs in (DVC and users run from its root), else the package's own
    here = Path("params")
    default_params = str(here if (here / "params.yaml").is_file() else PARAMS_DIR)

    def planned(p: argparse.ArgumentParser, expect: bool = True) -> argparse.ArgumentParser:
        p.add_argument(
            "--params-dir",
            default=default_params,
            help="the params/ folder (default: ./params if there is one, else the installed project's)",
        )
        p.add_argument(
            "--overrides",
            default=None,
            metavar="JSON",
            help="overrides of params.yaml, nested (what Snakemake's --config holds)",
        )
        if expect:
            p.add_argument("--expect-hash", default=None, help="refuse to run if the stage's values changed")
        return p

    p = planned(sub.add_parser("plan", help="list every stage and cell the matrix makes, with its hash"), False)
    p.add_argument("--write", metavar="DIR", help="write one witness file per stage (what DVC compares)")
    p.add_argument("--dvc-yaml", metavar="PATH", help="write dvc.yaml for this plan")
    p.add_argument("--check-dvc", metavar="PATH", help="fail if PATH is not the dvc.yaml this plan makes")
    p.set_defaults(func=cmd_plan)

    p = planned(sub.add_parser("check-config", help="check params/ and every name it uses, without running"), False)
    p.set_defaults(func=cmd_check_config)

    p = planned(sub.add_parser("manifest", help="generate (avdigits) or list (a release) a dataset's clips"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--workers", type=int, default=0, help="generator processes (default: params.yaml extract.workers)")
    p.add_argument(
        "--data-check",
        choices=("warn", "refuse"),
        default="warn",
        help="when the data made differ from the committed fingerprint (reports/fingerprints.json)",
    )
    p.set_defaults(func=cmd_manifest)

    p = planned(sub.add_parser("extract", help="decode every clip of a shard into packed records (one ffmpeg each)"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--shard", type=int, default=None, help="one shard (default: all of them)")
    p.add_argument("--workers", type=int, default=1, help="ffmpeg processes at a time (the output does not change)")
    p.set_defaults(func=cmd_extract)

    p = planned(sub.add_parser("pack", help="join the shards into one memory-mappable file per split"), False)
    p.add_argument("--dataset", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument(
        "--data-check",
        choices=("warn", "refuse"),
        default="warn",
        help="when the data made differ from the committed fingerprint (reports/fingerprints.json)",
    )
    p.set_defaults(func=cmd_pack)

    p = planned(
        sub.add_parser(
            "train",
            help="train (or resume) one run and evaluate it",
            description="Train one cell; resumes from its last checkpoint by itself. Writes "
            "results/<dataset>/<protocol>/<fusion>/<method>/seed<k>/metrics.json "
            "and logs the run to MLflow.",
        )
    )
    p.add_argument("--cell", default=None, help="a cell of the matrix by name (`bml plan` lists them)")
    p.add_argument("--dataset", default="avdigits")
    p.add_argument("--protocol", default="embedded", help="a file in params/protocols/")
    p.add_argument("--method", default="joint")
    p.add_argument("--fusion", default="concat", help="concat, sum, film, gated; none for uni-modal methods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a value, e.g. train.epochs=2 or method.alpha=0.5 (repeatable)",
    )
    p.add_argument("--results-root", default=None, help="where run folders go (default: params.yaml results_root)")
    p.add_argument("--device", default="auto", help="auto (the GPU this job claims, if any), cpu, cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPUs the scheduler granted (recorded; compute runs on one thread so that no number depends on it)",
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs the job asked its scheduler for: a SLURM job given none of them stops (bml/gpu.py)",
    )
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.set_defaults(func=cmd_train)

    p = planned(
        sub.add_parser("report", help="tables, figures, the HTML page and summary.json from finished runs"), False
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "runtime",
        help="this machine's numerical environment as a run records it, with its canary digest (compare machines)",
    )
    p.set_defaults(func=cmd_runtime)

    p = sub.add_parser("datasets", help="the real datasets bml reads, and what each expects on disk")
    p.set_defaults(func=cmd_datasets)

    p = planned(
        sub.add_parser(
            "check-dataset",
            help="read a release tree (--probe: decode its media too): usable clips per split, what is left out, why",
        ),
        False,
    )
    p.add_argument("dataset")
    p.add_argument("--root", default=None, help="the release folder (default: the dataset's configured root)")
    p.add_argument("--probe", action="store_true", help="also decode every clip as extraction would; count the skips")
    p.add_argument("--recipe", default=None, help="the recipe --probe decodes with (default: the dataset's first)")
    p.add_argument("--workers", type=int, default=0, help="ffmpeg processes for --probe (default: extract.workers)")
    p.add_argument(
        "--out",
        default=None,
        help="where every clip left out is listed (default: <data_root>/<dataset>/check_dataset.tsv)",
    )
    p.set_defaults(func=cmd_check_dataset)
    return parser


# Commands whose process ends as soon as they are done, skipping the interpreter's teardown, which is long with
# torch loaded (benchmarks/results/timings.md, "Extraction ends its process at once"); every file an extraction
# writes is closed and renamed into place before the command returns. Only when run as a program.
ENDS_AT_ONCE = ("extract",)


def main(argv: list[str] | None = None) -> None:
    from bml.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as err:
        from bml.data.pack import PackedDataError  # here: numpy only when a command failed

        if not isinstance(err, (ConfigError, FileNotFoundError, PackedDataError)):
            raise
        print(f"bml {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    if argv is None and args.command in ENDS_AT_ONCE:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
