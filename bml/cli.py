"""The `bml` command: the entry points that Snakemake rules, DVC stages and users all call.

Every value comes in as an explicit option (Snakemake and DVC fill them from params/params.yaml), so
the same command does the same thing from any of the three. Heavy imports happen inside the commands:
`bml extract-frames` should not pay for importing torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _shards(args: argparse.Namespace) -> list[int] | None:
    return None if args.shard is None else [args.shard]


def cmd_check_config(args: argparse.Namespace) -> None:
    from bml.config import load_config

    load_config(args.path)
    print(f"{args.path}: valid")


def cmd_generate(args: argparse.Namespace) -> None:
    from bml.config import avdigits_settings
    from bml.data.avdigits import generate

    settings = avdigits_settings(args.preset, args.settings)
    generate(args.out, n_clips=args.n_clips, seed=args.seed, settings=settings, workers=args.workers)


def _report(records: list[dict], what: str) -> None:
    bad = [r for r in records if r["status"] != "ok"]
    print(f"{what}: {len(records) - len(bad)} clips done, {len(bad)} skipped")


def cmd_extract_frames(args: argparse.Namespace) -> None:
    from bml.data.extract import frames_work, run_shards

    records = run_shards(args.manifest, args.out, args.n_shards, frames_work(args.fps, args.jpeg_quality),
                         shards=_shards(args), workers=args.workers)
    _report(records, "extract-frames")


def cmd_extract_audio(args: argparse.Namespace) -> None:
    from bml.data.extract import audio_work, run_shards

    records = run_shards(args.manifest, args.out, args.n_shards, audio_work(args.sample_rate),
                         shards=_shards(args), workers=args.workers)
    _report(records, "extract-audio")


def cmd_spectrograms(args: argparse.Namespace) -> None:
    import numpy as np
    import soundfile

    from bml.data.audio import load_presets, spectrogram
    from bml.data.extract import INDEX_NAME, read_index, run_shard

    presets = load_presets(args.presets)
    if args.preset not in presets:
        raise SystemExit(f"bml spectrograms: unknown preset {args.preset!r}; choose one of {sorted(presets)}")
    preset = presets[args.preset]

    def work(row: dict, shard_dir: Path) -> int:
        wav = Path(args.audio) / shard_dir.name / f"{row['clip_id']}.wav"
        waveform, rate = soundfile.read(wav, dtype="float32")
        spec = spectrogram(waveform, rate, preset)
        tmp = shard_dir / f"{row['clip_id']}.tmp.npy"
        np.save(tmp, spec.astype(np.float32))
        tmp.rename(shard_dir / f"{row['clip_id']}.npy")
        return int(spec.shape[-1])

    shards = _shards(args) if args.shard is not None else range(args.n_shards)
    records = []
    for k in shards:
        index = Path(args.audio) / f"shard{k}" / INDEX_NAME
        if not index.is_file():
            raise SystemExit(f"bml spectrograms: {index} is missing; run extract-audio for shard {k} first")
        rows = [r for r in read_index(index) if r["status"] == "ok"]
        records += run_shard(rows, Path(args.out) / f"shard{k}", work)
    _report(records, "spectrograms")


def cmd_pack(args: argparse.Namespace) -> None:
    from bml.data.pack import pack

    pack(args.manifest, args.frames, args.audio, args.spectrograms, args.out,
         n_frames=args.n_frames, frame_size=args.frame_size, summary_path=args.summary)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from bml.train import TrainingError, resolve_config, train

    config = resolve_config(args.dataset, args.protocol, args.method, args.fusion, args.seed, args.set or [],
                            params_dir=Path(args.params_dir))
    if args.results_root:
        config["paths"]["results_root"] = args.results_root
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = train(config, device=args.device, restart=args.restart)
    except TrainingError as err:
        print(f"bml train: error: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    best = result["test"]["best"]
    print(f"{args.dataset}/{args.protocol}/{args.fusion}/{args.method}/seed{args.seed}: test acc {best['acc']:.2f} "
          f"(best on val, epoch {result['best_epoch']}), last epoch {result['test']['last']['acc']:.2f}")


def cmd_report(args: argparse.Namespace) -> None:
    from bml.config import load_config, read_yaml
    from bml.report import build_report
    from bml.tables import Settings

    params_dir = Path(args.params_dir)
    pipeline = load_config(params_dir / "params.yaml")
    r = pipeline["report"]
    settings = Settings(baseline=r["baseline"], test=r["test"], alpha=r["alpha"], which=r["which"],
                        seeds=tuple(pipeline["train"]["seeds"]))
    build_report(args.results_root or pipeline["results_root"], args.out or r["out_dir"],
                 read_yaml(params_dir / "published.yaml"), settings)


def build_parser() -> argparse.ArgumentParser:
    from bml.config import PARAMS_DIR

    parser = argparse.ArgumentParser(prog="bml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a parameter file against the schema")
    p.add_argument("path", nargs="?", default="params/params.yaml")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("generate", help="generate the embedded avdigits dataset as MP4 files")
    p.add_argument("--preset", default="audio_dominant")
    p.add_argument("--n-clips", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--settings", default=str(PARAMS_DIR / "datasets" / "avdigits.yaml"))
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_generate)

    def sharded(p: argparse.ArgumentParser, workers: bool = True) -> None:
        p.add_argument("--n-shards", type=int, default=1)
        p.add_argument("--shard", type=int, default=None, help="one shard (default: all of them)")
        if workers:
            p.add_argument("--workers", type=int, default=1, help="shards processed at once (ffmpeg runs them)")
        p.add_argument("--out", required=True)

    p = sub.add_parser("extract-frames", help="video frames as numbered JPEGs, per shard")
    p.add_argument("--manifest", required=True)
    p.add_argument("--fps", type=float, required=True)
    p.add_argument("--jpeg-quality", type=int, default=2)
    sharded(p)
    p.set_defaults(func=cmd_extract_frames)

    p = sub.add_parser("extract-audio", help="audio tracks as mono 16-bit WAV, per shard")
    p.add_argument("--manifest", required=True)
    p.add_argument("--sample-rate", type=int, required=True)
    sharded(p)
    p.set_defaults(func=cmd_extract_audio)

    p = sub.add_parser("spectrograms", help="spectrograms of the extracted WAVs under a named preset")
    p.add_argument("--audio", required=True, help="the extract-audio output folder")
    p.add_argument("--preset", required=True)
    p.add_argument("--presets", default=str(PARAMS_DIR / "audio_presets.yaml"), help="the preset file")
    sharded(p, workers=False)  # torch already uses every core for one shard
    p.set_defaults(func=cmd_spectrograms)

    p = sub.add_parser("pack", help="one memory-mappable file of features per split")
    p.add_argument("--manifest", required=True)
    p.add_argument("--frames", required=True)
    p.add_argument("--audio", required=True)
    p.add_argument("--spectrograms", required=True)
    p.add_argument("--n-frames", type=int, required=True)
    p.add_argument("--frame-size", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--summary", default=None, help="counts as JSON (default: <out>/summary.json)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("train", help="train (or resume) one run and evaluate it",
                       description="Train one (dataset, protocol, method, fusion, seed) cell; resumes from its "
                                   "last checkpoint by itself. Writes results/<dataset>/<protocol>/<fusion>/"
                                   "<method>/seed<k>/metrics.json and logs the run to MLflow.")
    p.add_argument("--dataset", default="avdigits")
    p.add_argument("--protocol", default="embedded", help="a file in params/protocols/")
    p.add_argument("--method", default="joint")
    p.add_argument("--fusion", default="concat", help="concat, sum, film, gated; none for uni-modal methods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a value, e.g. train.epochs=2 or method.alpha=0.5 (repeatable)")
    p.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu, cuda, cuda:1")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--params-dir", default=str(PARAMS_DIR), help="the params/ folder to read (default: the project's)")
    p.add_argument("--results-root", default=None, help="where run folders go (default: params.yaml results_root)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="tables, figures, the HTML page and summary.json from finished runs",
                       description="Read results/**/metrics.json and write reports/: tables (md, tex, csv), "
                                   "figures (png, pdf), index.html and summary.json (params.yaml: report).")
    p.add_argument("--params-dir", default=str(PARAMS_DIR), help="the params/ folder to read (default: the project's)")
    p.add_argument("--results-root", default=None, help="where the run folders are (default: params.yaml results_root)")
    p.add_argument("--out", default=None, help="output folder (default: params.yaml report.out_dir)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> None:
    from bml.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"bml {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
