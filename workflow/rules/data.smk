# Data stages: generate the embedded dataset, extract frames and audio with ffmpeg (one job per shard),
# compute spectrograms, pack each split into one memory-mappable file. Each rule calls a `bml` command,
# the same command that dvc.yaml runs.


rule generate_avdigits:
    output:
        manifest=dataset_dir("raw", "manifest.csv"),
        clips=directory(dataset_dir("raw", "clips")),
    params:
        preset=config["avdigits"]["preset"],
        n_clips=config["avdigits"]["n_clips"],
        seed=config["avdigits"]["seed"],
        settings=f"{workflow.basedir}/params/datasets/avdigits.yaml",
        out=parent_of("output", "manifest"),
    threads: config["avdigits"]["workers"]
    log:
        dataset_dir("logs", "generate.log"),
    benchmark:
        dataset_dir("benchmarks", "generate.tsv")
    shell:
        "bml generate --preset {params.preset} --n-clips {params.n_clips} --seed {params.seed}"
        " --workers {threads} --settings {params.settings} --out {params.out} > {log} 2>&1"


rule extract_frames:
    input:
        manifest=rules.generate_avdigits.output.manifest,
    output:
        directory(dataset_dir("frames", "shard{shard}")),
    params:
        fps=config["extract"]["fps"],
        quality=config["extract"]["jpeg_quality"],
        n_shards=config["extract"]["n_shards"],
        out=parent_of("output"),
    log:
        dataset_dir("logs", "extract_frames_{shard}.log"),
    benchmark:
        dataset_dir("benchmarks", "extract_frames_{shard}.tsv")
    shell:
        "bml extract-frames --manifest {input.manifest} --fps {params.fps} --jpeg-quality {params.quality}"
        " --n-shards {params.n_shards} --shard {wildcards.shard} --out {params.out} > {log} 2>&1"


rule extract_audio:
    input:
        manifest=rules.generate_avdigits.output.manifest,
    output:
        directory(dataset_dir("audio", "shard{shard}")),
    params:
        sample_rate=config["extract"]["sample_rate"],
        n_shards=config["extract"]["n_shards"],
        out=parent_of("output"),
    log:
        dataset_dir("logs", "extract_audio_{shard}.log"),
    benchmark:
        dataset_dir("benchmarks", "extract_audio_{shard}.tsv")
    shell:
        "bml extract-audio --manifest {input.manifest} --sample-rate {params.sample_rate}"
        " --n-shards {params.n_shards} --shard {wildcards.shard} --out {params.out} > {log} 2>&1"


rule spectrograms:
    input:
        dataset_dir("audio", "shard{shard}"),
    output:
        directory(dataset_dir("spectrograms", "shard{shard}")),
    params:
        preset=config["features"]["audio_preset"],
        presets=f"{workflow.basedir}/params/audio_presets.yaml",
        n_shards=config["extract"]["n_shards"],
        audio=parent_of("input"),
        out=parent_of("output"),
    log:
        dataset_dir("logs", "spectrograms_{shard}.log"),
    shell:
        "bml spectrograms --audio {params.audio} --preset {params.preset} --presets {params.presets}"
        " --n-shards {params.n_shards} --shard {wildcards.shard} --out {params.out} > {log} 2>&1"


rule pack:
    input:
        manifest=rules.generate_avdigits.output.manifest,
        frames=expand(dataset_dir("frames", "shard{shard}"), shard=SHARDS),
        audio=expand(dataset_dir("audio", "shard{shard}"), shard=SHARDS),
        spectrograms=expand(dataset_dir("spectrograms", "shard{shard}"), shard=SHARDS),
    output:
        [dataset_dir("packed", f"{split}.npy") for split in SPLITS],
        [dataset_dir("packed", f"{split}.json") for split in SPLITS],
        skipped=dataset_dir("packed", "skipped.tsv"),
        summary=dataset_dir("summary.json"),
    params:
        n_frames=config["features"]["n_frames"],
        frame_size=config["features"]["frame_size"],
        frames=parent_of("input", "frames"),
        audio=parent_of("input", "audio"),
        spectrograms=parent_of("input", "spectrograms"),
        out=parent_of("output", "skipped"),
    log:
        dataset_dir("logs", "pack.log"),
    shell:
        "bml pack --manifest {input.manifest} --frames {params.frames} --audio {params.audio}"
        " --spectrograms {params.spectrograms} --n-frames {params.n_frames}"
        " --frame-size {params.frame_size} --out {params.out} --summary {output.summary} > {log} 2>&1"
