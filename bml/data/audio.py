"""Waveform -> spectrogram, exactly as the papers bml reproduces feed their audio encoders.

Each recipe is a named preset in params/audio_presets.yaml, where every constant cites its source:
- ogm_cremad: OGM-GE (Peng et al., CVPR 2022), the authors' CREMA-D loader: librosa.load(sr=22050) (soxr from
  the 16 kHz WAVs), tiled 3x, 3 s, librosa.stft(n_fft=512, hop_length=353), log(|S| + 1e-7) -> 257 x 188.
- ogm_vggsound: OGM-GE's VGGSound loader: 16 kHz, doubled until >= 10 s, a 5 s crop (bml: the fixed centre of
  the authors' random range), librosa.stft(n_fft=256, hop_length=128), log(|S| + 1e-7) -> 129 x 626.
- ks_fbank: Kinetics-Sounds loader of the BML TPAMI 2024 code, after AST (Gong et al., 2021): 16 kHz,
  128-bin Kaldi fbank, 1024 frames, (x - mean) / (2 std) -> 1024 x 128 (time x mel, AST's orientation).
- avdigits: the project's embedded dataset (docs/methods.md, "The embedded dataset's settings"): 16 kHz,
  3 s, 64-mel log power spectrogram, 50 frames of 60 ms -> 64 x 50 (mel x time).

Each recipe is two steps so a shard's clips run in batches (`spectrograms`): `<kind>_prepare` makes one clip a
fixed-length waveform (tile, crop, pad; after resampling), then `<kind>` turns a stacked (B, n) batch into
(B, F, T). `spectrogram` is the same for one clip.
Pure functions over numpy/torch: audio decoding lives elsewhere (torchaudio.load needs torchcodec).
"""

import functools
from pathlib import Path

import numpy as np
import soxr
import torch
import torchaudio
import yaml

DEFAULT_PRESETS = Path(__file__).resolve().parents[2] / "params" / "audio_presets.yaml"

# librosa's res_type names for soxr (librosa.resample passes them to soxr.resample as `quality`);
# librosa.load's default since 0.10 is soxr_hq
RESAMPLERS = ("soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq")

# the constants each kind reads; checked up front so a bad preset fails with the field's name
REQUIRED = {
    "stft_log": (
        "sample_rate resampler tile tile_min_samples crop_start n_samples clip n_fft hop_length win_length window "
        "center pad_mode eps"
    ).split(),
    "kaldi_fbank": (
        "sample_rate resampler subtract_mean htk_compat use_energy window_type num_mel_bins dither frame_shift "
        "frame_length preemphasis_coefficient remove_dc_offset round_to_power_of_two snip_edges low_freq high_freq "
        "target_frames norm_mean norm_std"
    ).split(),
    "log_mel": (
        "sample_rate resampler n_samples n_fft win_length hop_length n_mels f_min f_max mel_scale mel_norm center "
        "pad_mode power eps target_frames"
    ).split(),
}


def load_presets(path: str | Path | None = None) -> dict:
    """Read the preset file (default: params/audio_presets.yaml of this checkout)."""
    path = Path(path) if path is not None else DEFAULT_PRESETS
    with open(path) as f:
        presets = yaml.safe_load(f)
    if not isinstance(presets, dict):
        raise ValueError(f"{path}: expected a mapping of preset name -> constants, got {type(presets).__name__}")
    return presets


@functools.lru_cache(maxsize=4)
def _default_presets(mtime_ns: int) -> dict:
    """The default preset file, parsed once per modification time (parsing costs more than a clip:
    benchmarks/results/timings.md)."""
    return load_presets(DEFAULT_PRESETS)


def _resolve(preset: str | dict) -> tuple[str, dict]:
    """Return (name, constants) for a preset name or an explicit dict of constants."""
    if isinstance(preset, dict):
        name, cfg = preset.get("name", "<dict preset>"), preset
    else:
        presets = _default_presets(DEFAULT_PRESETS.stat().st_mtime_ns)
        if preset not in presets:
            raise ValueError(
                f"unknown audio preset {preset!r}; available: {', '.join(sorted(presets))} "
                f"(defined in {DEFAULT_PRESETS})"
            )
        name, cfg = preset, presets[preset]
    kind = cfg.get("kind")
    if kind not in REQUIRED:
        raise ValueError(f"audio preset {name!r}: kind {kind!r} is not one of {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED[kind] if k not in cfg]
    if missing:
        raise ValueError(f"audio preset {name!r} (kind {kind}): missing constants {', '.join(missing)}")
    if cfg["resampler"] not in RESAMPLERS:
        raise ValueError(f"audio preset {name!r}: resampler {cfg['resampler']!r} is not one of {', '.join(RESAMPLERS)}")
    return name, cfg


_BUILT: dict[tuple[str, str], object] = {}  # (builder, the preset's constants) -> what it built


def _cached(cfg: dict, build):
    """build(cfg), built once per distinct set of constants (filter banks, windows, torchaudio modules)."""
    key = (build.__name__, repr(sorted(cfg.items())))
    if key not in _BUILT:
        _BUILT[key] = build(cfg)
    return _BUILT[key]


def _fix_length(x: torch.Tensor, n: int, dim: int, value: float = 0.0) -> torch.Tensor:
    """Cut `x` to n entries along `dim`, or pad the end with `value`."""
    size = x.shape[dim]
    if size >= n:
        return x.narrow(dim, 0, n)
    pad_shape = list(x.shape)
    pad_shape[dim] = n - size
    return torch.cat([x, x.new_full(pad_shape, value)], dim=dim)


def resample(x: np.ndarray, rate: int, target_rate: int, resampler: str) -> np.ndarray:
    """librosa.load's resampling (librosa >= 0.10): soxr, then fix the length to ceil(T * target / rate)."""
    y = soxr.resample(x, rate, target_rate, quality=resampler)
    n = int(np.ceil(x.shape[0] * (float(target_rate) / rate)))  # librosa.resample's length, same float formula
    return y[:n] if y.shape[0] >= n else np.pad(y, (0, n - y.shape[0]))


# --- stft_log: OGM-GE's CREMA-D and VGGSound recipes ----------------------------------------------------------


def stft_log_prepare(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Tile, crop, clip: (T,) -> (n_samples,)."""
    x = x.repeat(cfg["tile"])  # CREMA-D: np.tile(samples, 3)
    while x.shape[0] < cfg["tile_min_samples"]:  # VGGSound: while len < 10 s: np.tile(sample, 2)
        x = x.repeat(2)
    # crop; bml zero-pads clips that are still shorter (the authors' code would give fewer frames)
    x = _fix_length(x[cfg["crop_start"] :], cfg["n_samples"], dim=0)
    return x.clamp(*cfg["clip"])


def _hann(cfg: dict) -> torch.Tensor:
    if cfg["window"] != "hann":
        raise ValueError(f"stft_log: window {cfg['window']!r} is not implemented; use hann (librosa's default)")
    # = scipy get_window("hann", fftbins=True), librosa's window, float64 as scipy returns it
    return torch.hann_window(cfg["win_length"], periodic=True, dtype=torch.float64)


def stft_log(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Log-magnitude STFT: (B, n_samples) -> (B, n_fft // 2 + 1, frames).
    Precision as librosa.stft: float32 samples times the float64 window, FFT in float64, stored as complex64;
    then |S| + eps and log in float32 as numpy does. Rows near silence (above 8 kHz of a 16 kHz file
    resampled to 22,050 Hz) hold |S| ~ 1e-7, where a float32 FFT's rounding alone moves the log by units."""
    S = torch.stft(
        x.double(),
        n_fft=cfg["n_fft"],
        hop_length=cfg["hop_length"],
        win_length=cfg["win_length"],
        window=_cached(cfg, _hann),
        center=cfg["center"],
        pad_mode=cfg["pad_mode"],
        return_complex=True,
    )  # (B, n_fft // 2 + 1, 1 + n_samples // hop_length)
    return torch.log(S.to(torch.complex64).abs() + cfg["eps"])


# --- kaldi_fbank: AST's recipe (Kinetics-Sounds) -------------------------------------------------------------
# Written out in torch (torchaudio.compliance.kaldi.fbank takes one clip at a time) with the same steps:
# frames, remove DC, pre-emphasis, window, zero-pad to a power of two, power spectrum, Kaldi mel banks,
# log with the float32 epsilon floor. tests/test_audio.py checks it against torchaudio's fbank and numpy.


def _kaldi_sizes(cfg: dict) -> tuple[int, int, int]:
    """(frame length, frame shift, FFT size) in samples, as torchaudio.compliance.kaldi computes them."""
    frame = int(cfg["sample_rate"] * cfg["frame_length"] * 0.001)
    shift = int(cfg["sample_rate"] * cfg["frame_shift"] * 0.001)
    return frame, shift, 1 << (frame - 1).bit_length()  # next power of two (round_to_power_of_two)


def _kaldi_check(cfg: dict) -> None:
    unsupported = {"dither": 0.0, "use_energy": False, "round_to_power_of_two": True, "snip_edges": True}
    for key, value in unsupported.items():
        if cfg[key] != value:
            raise ValueError(f"kaldi_fbank: {key}={cfg[key]!r} is not implemented (bml supports {key}={value!r})")


def kaldi_fbank_prepare(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Subtract the clip's mean, then zero-pad or cut to the samples of target_frames frames:
    (T,) -> (n,). The real frame count is recovered from T by `_kaldi_real_frames`."""
    _kaldi_check(cfg)
    if cfg["subtract_mean"]:
        x = x - x.mean()  # AST: waveform - waveform.mean(), over the whole clip
    frame, shift, _ = _kaldi_sizes(cfg)
    return _fix_length(x, frame + shift * (cfg["target_frames"] - 1), dim=0)


def _kaldi_real_frames(n_samples: int, cfg: dict) -> int:
    """Frames Kaldi makes from a clip (snip_edges), capped at target_frames; bml pads a clip shorter than
    one frame to one frame (Kaldi refuses it)."""
    frame, shift, _ = _kaldi_sizes(cfg)
    return min(cfg["target_frames"], 1 + (max(n_samples, frame) - frame) // shift)


def _kaldi_window_and_banks(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    frame, _, n_fft = _kaldi_sizes(cfg)
    window = torch.hann_window(frame, periodic=False)  # Kaldi "hanning": 0.5 - 0.5 cos(2 pi i / (N - 1))
    if cfg["window_type"] == "povey":
        window = window.pow(0.85)  # Kaldi "povey": hanning ** 0.85
    elif cfg["window_type"] != "hanning":
        raise ValueError(f"kaldi_fbank: window_type {cfg['window_type']!r} is not implemented (hanning, povey)")
    # vtln_low 100, vtln_high -500, warp 1.0: torchaudio's fbank defaults (no warping)
    banks, _ = torchaudio.compliance.kaldi.get_mel_banks(
        cfg["num_mel_bins"], n_fft, float(cfg["sample_rate"]), cfg["low_freq"], cfg["high_freq"], 100.0, -500.0, 1.0
    )
    banks = torch.nn.functional.pad(banks, (0, 1))  # (mel, n_fft // 2 + 1): no weight on the Nyquist bin
    return window, banks


def kaldi_fbank(x: torch.Tensor, cfg: dict, real_frames: torch.Tensor) -> torch.Tensor:
    """(B, n) prepared waveforms -> (B, target_frames, num_mel_bins), time first as AST feeds its patch
    embedding; frames past each clip's `real_frames` are zero before normalising, as AST pads."""
    frame, shift, n_fft = _kaldi_sizes(cfg)
    window, banks = _cached(cfg, _kaldi_window_and_banks)
    frames = x.unfold(1, frame, shift)  # (B, target_frames, frame)
    if cfg["remove_dc_offset"]:
        frames = frames - frames.mean(dim=2, keepdim=True)
    c = cfg["preemphasis_coefficient"]
    if c != 0.0:  # y[j] = x[j] - c x[max(0, j - 1)]
        frames = frames - c * torch.cat([frames[..., :1], frames[..., :-1]], dim=2)
    power = torch.fft.rfft(frames * window, n=n_fft).abs().pow(2)  # (B, target_frames, n_fft // 2 + 1)
    mel = power @ banks.T  # (B, target_frames, num_mel_bins)
    fbank = mel.clamp_min(torch.finfo(mel.dtype).eps).log()  # Kaldi's floor: float epsilon
    keep = torch.arange(cfg["target_frames"])[None, :] < real_frames[:, None]  # (B, target_frames)
    fbank = fbank * keep[..., None]  # AST pads with zeros after the log, before normalising
    return (fbank - cfg["norm_mean"]) / (cfg["norm_std"] * 2)


# --- log_mel: avdigits ---------------------------------------------------------------------------------------


def log_mel_prepare(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Fixed 3 s: (T,) -> (n_samples,)."""
    return _fix_length(x, cfg["n_samples"], dim=0)


def _mel_spectrogram(cfg: dict) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg["sample_rate"],
        n_fft=cfg["n_fft"],
        win_length=cfg["win_length"],
        hop_length=cfg["hop_length"],
        f_min=cfg["f_min"],
        f_max=cfg["f_max"],
        n_mels=cfg["n_mels"],
        window_fn=torch.hann_window,
        power=cfg["power"],
        center=cfg["center"],
        pad_mode=cfg["pad_mode"],
        norm=cfg["mel_norm"],
        mel_scale=cfg["mel_scale"],
    )


def log_mel(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Log mel power spectrogram, fixed frame count: (B, n_samples) -> (B, n_mels, target_frames)."""
    m = torch.log(_cached(cfg, _mel_spectrogram)(x) + cfg["eps"])  # (B, n_mels, 1 + n_samples // hop)
    # pad with the log of silence, not zero, so padding reads as "nothing there"
    return _fix_length(m, cfg["target_frames"], dim=2, value=float(np.log(cfg["eps"])))


PREPARE = {"stft_log": stft_log_prepare, "kaldi_fbank": kaldi_fbank_prepare, "log_mel": log_mel_prepare}

# clips per batched transform: at most this many prepared samples (1 MiB of float32). Measured on 1 CPU core:
# batches beyond a few MiB are slower per clip than one clip at a time (the (B, frames, n_fft) temporaries
# leave the cache); a few clips per batch amortise the per-call overhead of small clips.
BATCH_SAMPLES = 1 << 18


def spectrograms(waveforms: list[np.ndarray], sample_rate: int, preset: str | dict) -> np.ndarray:
    """Spectrograms of many mono waveforms in [-1, 1] (a shard's clips) in one call: (B,) + output_shape(preset),
    float32, equal to `spectrogram` on each clip. Each clip is resampled (soxr, as librosa.load) where
    `sample_rate` is not the preset's, then cut/padded as the preset says, so the batch is rectangular."""
    name, cfg = _resolve(preset)
    if len(waveforms) == 0:
        raise ValueError(f"audio preset {name!r}: no waveforms given")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"audio preset {name!r}: sample_rate must be a positive integer, got {sample_rate!r}")
    prepared, lengths = [], []
    for i, waveform in enumerate(waveforms):
        where = f"audio preset {name!r}" + (f", clip {i} of {len(waveforms)}" if len(waveforms) > 1 else "")
        waveform = np.asarray(waveform)
        if waveform.ndim != 1:
            raise ValueError(
                f"{where}: expected a 1-D mono waveform, got shape {waveform.shape}; average or pick a channel first"
            )
        if waveform.size == 0:
            raise ValueError(f"{where}: the waveform is empty (0 samples)")
        x = waveform.astype(np.float32)  # librosa.load and soundfile give float32
        if sample_rate != cfg["sample_rate"]:
            x = resample(x, int(sample_rate), int(cfg["sample_rate"]), cfg["resampler"])
        lengths.append(x.shape[0])
        prepared.append(PREPARE[cfg["kind"]](torch.from_numpy(x), cfg))
    chunk = max(1, BATCH_SAMPLES // prepared[0].shape[0])
    out = []
    with torch.inference_mode():
        for start in range(0, len(prepared), chunk):
            batch = torch.stack(prepared[start : start + chunk])  # (b, n)
            if cfg["kind"] == "stft_log":
                out.append(stft_log(batch, cfg))
            elif cfg["kind"] == "log_mel":
                out.append(log_mel(batch, cfg))
            else:
                real = torch.tensor([_kaldi_real_frames(n, cfg) for n in lengths[start : start + chunk]])
                out.append(kaldi_fbank(batch, cfg, real))
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def spectrogram(waveform: np.ndarray, sample_rate: int, preset: str | dict) -> np.ndarray:
    """Turn a mono waveform in [-1, 1] into the float32 spectrogram of `preset` (a name or a dict),
    resampling first (soxr, as librosa.load) if `sample_rate` is not the preset's."""
    return spectrograms([waveform], sample_rate, preset)[0]


def output_shape(preset: str | dict) -> tuple[int, int]:
    """Shape `spectrogram` returns for `preset`, from its constants alone (for building models)."""
    _, cfg = _resolve(preset)
    kind = cfg["kind"]
    if kind == "stft_log":
        frames = (
            cfg["n_samples"] // cfg["hop_length"] + 1
            if cfg["center"]
            else (cfg["n_samples"] - cfg["n_fft"]) // cfg["hop_length"] + 1
        )
        return cfg["n_fft"] // 2 + 1, frames  # (freq, time)
    if kind == "kaldi_fbank":
        return cfg["target_frames"], cfg["num_mel_bins"]  # (time, mel)
    return cfg["n_mels"], cfg["target_frames"]  # log_mel: (mel, time)
