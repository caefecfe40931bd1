"""Spectrogram presets (bml.data.audio): shapes, pure-tone oracles, and agreement with librosa / numpy."""

import numpy as np
import pytest
import scipy.signal

from bml.data.audio import load_presets, output_shape, spectrogram

DOCUMENTED_SHAPES = {"ogm_cremad": (257, 188), "ks_fbank": (1024, 128), "avdigits": (64, 100)}


def tone(freq: float, sample_rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Noise plus two tones, with a few samples beyond [-1, 1] so the clip step matters."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    x = 0.2 * rng.standard_normal(n) + tone(440, sample_rate, seconds, 0.3)
    x += tone(3000, sample_rate, seconds, 0.1)
    x[rng.integers(0, n, 50)] = 1.5
    return x.astype(np.float32)


def test_presets_file_has_the_three_presets():
    presets = load_presets()
    assert set(DOCUMENTED_SHAPES) <= set(presets)
    assert {p["kind"] for p in presets.values()} == {"stft_log", "kaldi_fbank", "log_mel"}


@pytest.mark.parametrize("preset", sorted(DOCUMENTED_SHAPES))
@pytest.mark.parametrize("seconds", [0.01, 0.3, 7.0])
def test_shape_matches_output_shape_and_docs(preset, seconds):
    sr = load_presets()[preset]["sample_rate"]
    s = spectrogram(speechlike(sr, seconds), sr, preset)
    assert s.dtype == np.float32
    assert s.shape == output_shape(preset) == DOCUMENTED_SHAPES[preset]
    assert np.isfinite(s).all()


def test_output_shape_follows_the_constants():
    cfg = dict(load_presets()["ogm_cremad"], n_fft=1024, hop_length=512)
    assert output_shape(cfg) == (513, 66150 // 512 + 1)
    s = spectrogram(tone(1000, 22050, 2.0), 22050, cfg)
    assert s.shape == output_shape(cfg)


# --- pure-tone oracles ---------------------------------------------------------------------------------

def test_ogm_cremad_tone_peaks_in_its_bin():
    s = spectrogram(tone(1000, 22050, 2.0), 22050, "ogm_cremad")   # (freq, time)
    assert s.mean(axis=1).argmax() == round(1000 * 512 / 22050)    # bin 23


def test_avdigits_tone_peaks_in_the_mel_band_that_contains_it():
    s = spectrogram(tone(1000, 16000, 2.0), 16000, "avdigits")     # (mel, time)
    band = s[:, :50].mean(axis=1).argmax()                         # first 1.5 s: all tone
    # HTK mel band m spans points m .. m + 2 of n_mels + 2 points evenly spaced in mel over [0, 8000] Hz
    mel = lambda f: 2595 * np.log10(1 + f / 700)                   # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)                    # noqa: E731
    edges = hz(np.linspace(mel(0), mel(8000), 64 + 2))
    assert edges[band] < 1000 < edges[band + 2]


def test_ks_fbank_peak_bin_rises_with_tone_frequency():
    peaks = []
    for f in [250, 500, 1000, 2000, 4000]:
        s = spectrogram(tone(f, 16000, 2.0), 16000, "ks_fbank")    # (time, mel)
        peaks.append(s[:150].mean(axis=0).argmax())                # 2 s = 198 real frames; pad after
    assert all(a < b for a, b in zip(peaks, peaks[1:], strict=False)), peaks


def test_ks_fbank_normalisation_and_zero_padding():
    s = spectrogram(tone(1000, 16000, 1.0), 16000, "ks_fbank")
    # 1 s -> 1 + (16000 - 400) // 160 = 98 real frames; the rest are zero fbank, normalised
    np.testing.assert_allclose(s[98:], (0 + 4.503877) / (5.141276 * 2), rtol=1e-6)
    assert not np.allclose(s[97], s[98])


def test_resampled_tone_peaks_in_the_same_bin():
    native = spectrogram(tone(1000, 22050, 2.0), 22050, "ogm_cremad")
    resampled = spectrogram(tone(1000, 16000, 2.0), 16000, "ogm_cremad")
    assert resampled.mean(axis=1).argmax() == native.mean(axis=1).argmax() == 23


# --- independent references ----------------------------------------------------------------------------

def ogm_waveform(x: np.ndarray) -> np.ndarray:
    """The authors' preprocessing, written out: tile 3x, cut to 3 s, clip to [-1, 1]."""
    return np.clip(np.tile(x, 3)[:22050 * 3], -1.0, 1.0)


def test_ogm_cremad_matches_librosa():
    """Criterion: on magnitudes (exp of the output minus eps), the largest absolute difference is below
    1e-4 of the largest magnitude; and in the log domain, bins within 60 dB of the peak agree to 1e-3."""
    librosa = pytest.importorskip("librosa")
    x = speechlike(22050, 1.7)
    ref = np.abs(librosa.stft(ogm_waveform(x), n_fft=512, hop_length=353))  # centre, zero pad (>= 0.10)
    out = spectrogram(x, 22050, "ogm_cremad")
    assert out.shape == ref.shape
    mag = np.exp(out.astype(np.float64)) - 1e-7
    assert np.abs(mag - ref).max() / ref.max() < 1e-4
    loud = ref > 1e-3 * ref.max()
    assert np.abs(out - np.log(ref + 1e-7))[loud].max() < 1e-3


def test_ogm_cremad_matches_numpy():
    """Same criterion against a float64 numpy STFT: zero-pad n_fft // 2, periodic hann, rfft."""
    x = speechlike(22050, 1.7, seed=1)
    y = np.pad(ogm_waveform(x).astype(np.float64), 256)                    # center=True, constant
    frames = np.lib.stride_tricks.sliding_window_view(y, 512)[::353]       # (188, 512)
    ref = np.abs(np.fft.rfft(frames * scipy.signal.get_window("hann", 512), axis=1)).T  # (257, 188)
    out = spectrogram(x, 22050, "ogm_cremad")
    assert out.shape == ref.shape == (257, 188)
    mag = np.exp(out.astype(np.float64)) - 1e-7
    assert np.abs(mag - ref).max() / ref.max() < 1e-4


# --- bad input -----------------------------------------------------------------------------------------

def test_unknown_preset_is_named_with_the_alternatives():
    with pytest.raises(ValueError, match="no_such_preset") as err:
        spectrogram(tone(1000, 16000, 1.0), 16000, "no_such_preset")
    assert "ogm_cremad" in str(err.value) and "avdigits" in str(err.value)
    with pytest.raises(ValueError, match="no_such_preset"):
        output_shape("no_such_preset")


@pytest.mark.parametrize("preset", sorted(DOCUMENTED_SHAPES))
def test_empty_waveform_is_refused(preset):
    with pytest.raises(ValueError, match=f"{preset}.*empty"):
        spectrogram(np.zeros(0, dtype=np.float32), 16000, preset)


def test_multichannel_waveform_is_refused():
    with pytest.raises(ValueError, match="1-D"):
        spectrogram(np.zeros((2, 16000), dtype=np.float32), 16000, "avdigits")
