"""Waveform -> spectrogram, exactly as the papers bml reproduces feed their audio encoders.

Each recipe is a named preset in params/audio_presets.yaml, where every constant cites its source:
- ogm_cremad: OGM-GE (Peng et al., CVPR 2022), the authors' CREMA-D loader: 22.05 kHz, tiled 3x, 3 s,
  librosa.stft(n_fft=512, hop_length=353) (librosa 0.10 defaults), log(|S| + 1e-7) -> 257 x 188 (freq x time).
- ks_fbank: Kinetics-Sounds loader of the BML TPAMI 2024 code, after AST (Gong et al., 2021): 16 kHz,
  128-bin Kaldi fbank, 1024 frames, (x - mean) / (2 std) -> 1024 x 128 (time x mel, AST's orientation).
- avdigits: the project's embedded dataset (../shared/AVDIGITS.md): 16 kHz, 3 s, 64-mel log power
  spectrogram, 100 frames of 30 ms -> 64 x 100 (mel x time).

Pure functions over numpy/torch: audio decoding lives elsewhere (torchaudio.load needs torchcodec).
"""

from pathlib import Path

import numpy as np
import torch
import torchaudio
import yaml

DEFAULT_PRESETS = Path(__file__).resolve().parents[2] / "params" / "audio_presets.yaml"

# the constants each kind reads; checked up front so a bad preset fails with the field's name
REQUIRED = {
    "stft_log": ("sample_rate", "tile", "n_samples", "clip", "n_fft", "hop_length", "win_length", "window",
                 "center", "pad_mode", "eps"),
    "kaldi_fbank": ("sample_rate", "subtract_mean", "htk_compat", "use_energy", "window_type", "num_mel_bins",
                    "dither", "frame_shift", "frame_length", "preemphasis_coefficient", "remove_dc_offset",
                    "round_to_power_of_two", "snip_edges", "low_freq", "high_freq", "target_frames",
                    "norm_mean", "norm_std"),
    "log_mel": ("sample_rate", "n_samples", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max",
                "mel_scale", "mel_norm", "center", "pad_mode", "power", "eps", "target_frames"),
}


def load_presets(path: str | Path | None = None) -> dict:
    """Read the preset file (default: params/audio_presets.yaml of this checkout)."""
    path = Path(path) if path is not None else DEFAULT_PRESETS
    with open(path) as f:
        presets = yaml.safe_load(f)
    if not isinstance(presets, dict):
        raise ValueError(f"{path}: expected a mapping of preset name -> constants, "
                         f"got {type(presets).__name__}")
    return presets


def _resolve(preset: str | dict) -> tuple[str, dict]:
    """Return (name, constants) for a preset name or an explicit dict of constants."""
    if isinstance(preset, dict):
        name, cfg = preset.get("name", "<dict preset>"), preset
    else:
        presets = load_presets()
        if preset not in presets:
            raise ValueError(f"unknown audio preset {preset!r}; available: {', '.join(sorted(presets))} "
                             f"(defined in {DEFAULT_PRESETS})")
        name, cfg = preset, presets[preset]
    kind = cfg.get("kind")
    if kind not in REQUIRED:
        raise ValueError(f"audio preset {name!r}: kind {kind!r} is not one of {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED[kind] if k not in cfg]
    if missing:
        raise ValueError(f"audio preset {name!r} (kind {kind}): missing constants {', '.join(missing)}")
    return name, cfg


def _fix_length(x: torch.Tensor, n: int, dim: int, value: float = 0.0) -> torch.Tensor:
    """Cut `x` to n entries along `dim`, or pad the end with `value`."""
    size = x.shape[dim]
    if size >= n:
        return x.narrow(dim, 0, n)
    pad_shape = list(x.shape)
    pad_shape[dim] = n - size
    return torch.cat([x, x.new_full(pad_shape, value)], dim=dim)


def stft_log(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """OGM-GE's CREMA-D recipe: tile, cut, clip, log-magnitude STFT. (T,) -> (n_fft//2+1, frames)."""
    x = x.repeat(cfg["tile"])                       # (tile * T,)
    # cut to 3 s; bml zero-pads clips that are still shorter (the authors' code would give fewer frames)
    x = _fix_length(x, cfg["n_samples"], dim=0)     # (n_samples,)
    x = x.clamp(*cfg["clip"])
    if cfg["window"] != "hann":
        raise ValueError(f"stft_log: window {cfg['window']!r} is not implemented; "
                         "use hann (librosa's default)")
    window = torch.hann_window(cfg["win_length"], periodic=True, dtype=x.dtype)  # = scipy get_window("hann")
    S = torch.stft(x, n_fft=cfg["n_fft"], hop_length=cfg["hop_length"], win_length=cfg["win_length"],
                   window=window, center=cfg["center"], pad_mode=cfg["pad_mode"], return_complex=True)
    return torch.log(S.abs() + cfg["eps"])          # (n_fft//2+1, 1 + n_samples // hop_length)


def kaldi_fbank(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """AST's recipe (used for Kinetics-Sounds): Kaldi log-mel fbank, fixed frame count, normalised.
    (T,) -> (target_frames, num_mel_bins), time first as AST feeds its patch embedding."""
    if cfg["subtract_mean"]:
        x = x - x.mean()
    # Kaldi refuses input shorter than one frame; bml zero-pads such clips to one frame
    frame = int(cfg["sample_rate"] * cfg["frame_length"] / 1000)
    x = _fix_length(x, max(frame, x.shape[0]), dim=0)
    fbank = torchaudio.compliance.kaldi.fbank(
        x[None],                                    # (1, T): kaldi wants (channel, time)
        sample_frequency=cfg["sample_rate"], htk_compat=cfg["htk_compat"], use_energy=cfg["use_energy"],
        window_type=cfg["window_type"], num_mel_bins=cfg["num_mel_bins"], dither=cfg["dither"],
        frame_shift=cfg["frame_shift"], frame_length=cfg["frame_length"],
        preemphasis_coefficient=cfg["preemphasis_coefficient"], remove_dc_offset=cfg["remove_dc_offset"],
        round_to_power_of_two=cfg["round_to_power_of_two"], snip_edges=cfg["snip_edges"],
        low_freq=cfg["low_freq"], high_freq=cfg["high_freq"],
    )                                               # (frames, num_mel_bins)
    # AST pads with zeros after the log, before normalising; so do we
    fbank = _fix_length(fbank, cfg["target_frames"], dim=0)  # (target_frames, num_mel_bins)
    return (fbank - cfg["norm_mean"]) / (cfg["norm_std"] * 2)


def log_mel(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """avdigits' recipe: fixed 3 s, log mel power spectrogram, fixed frame count. (T,) -> (n_mels, frames)."""
    x = _fix_length(x, cfg["n_samples"], dim=0)     # (n_samples,)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg["sample_rate"], n_fft=cfg["n_fft"], win_length=cfg["win_length"],
        hop_length=cfg["hop_length"], f_min=cfg["f_min"], f_max=cfg["f_max"], n_mels=cfg["n_mels"],
        window_fn=torch.hann_window, power=cfg["power"], center=cfg["center"], pad_mode=cfg["pad_mode"],
        norm=cfg["mel_norm"], mel_scale=cfg["mel_scale"],
    )
    m = torch.log(mel(x) + cfg["eps"])              # (n_mels, 1 + n_samples // hop_length)
    # pad with the log of silence, not zero, so padding reads as "nothing there"
    return _fix_length(m, cfg["target_frames"], dim=1, value=float(np.log(cfg["eps"])))  # (n_mels, frames)


RECIPES = {"stft_log": stft_log, "kaldi_fbank": kaldi_fbank, "log_mel": log_mel}


def spectrogram(waveform: np.ndarray, sample_rate: int, preset: str | dict) -> np.ndarray:
    """Turn a mono waveform in [-1, 1] into the float32 spectrogram of `preset` (a name or a dict),
    resampling first if `sample_rate` is not the preset's."""
    name, cfg = _resolve(preset)
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"audio preset {name!r}: expected a 1-D mono waveform, got shape {waveform.shape}; "
                         "average or pick a channel first")
    if waveform.size == 0:
        raise ValueError(f"audio preset {name!r}: the waveform is empty (0 samples)")
    x = torch.from_numpy(waveform.astype(np.float32))  # (T,)
    if sample_rate != cfg["sample_rate"]:
        # the papers decode at the target rate (librosa.load: soxr; AST: files already 16 kHz); bandlimited
        # sinc resampling differs from those only near Nyquist
        x = torchaudio.functional.resample(x, int(sample_rate), int(cfg["sample_rate"]))
    with torch.no_grad():
        out = RECIPES[cfg["kind"]](x, cfg)
    return out.numpy().astype(np.float32, copy=False)


def output_shape(preset: str | dict) -> tuple[int, int]:
    """Shape `spectrogram` returns for `preset`, from its constants alone (for building models)."""
    _, cfg = _resolve(preset)
    kind = cfg["kind"]
    if kind == "stft_log":
        frames = cfg["n_samples"] // cfg["hop_length"] + 1 if cfg["center"] else \
            (cfg["n_samples"] - cfg["n_fft"]) // cfg["hop_length"] + 1
        return cfg["n_fft"] // 2 + 1, frames       # (freq, time)
    if kind == "kaldi_fbank":
        return cfg["target_frames"], cfg["num_mel_bins"]  # (time, mel)
    return cfg["n_mels"], cfg["target_frames"]      # log_mel: (mel, time)
