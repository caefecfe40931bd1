"""Spectrogram presets (bml.data.audio): shapes, pure-tone oracles, agreement with the authors' steps run through
librosa (from real WAV files), with torchaudio's Kaldi fbank and a numpy Kaldi fbank, and batched = per clip."""

import numpy as np
import pytest
import scipy.signal
import soundfile
import torch
import torchaudio

from bml.data.audio import RESAMPLERS, load_presets, output_shape, spectrogram, spectrograms

DOCUMENTED_SHAPES = {
    "ogm_cremad": (257, 188),
    "ogm_vggsound": (129, 626),
    "ks_fbank": (1024, 128),
    "avdigits": (64, 50),
}


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


def chirpy(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: a rising log chirp over the whole band, a syllable-rate (4 Hz) modulated
    chirp in the speech band, and noise; float64 in about [-0.6, 0.6]."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    x = 0.25 * scipy.signal.chirp(t, 100, seconds, 0.47 * sample_rate, method="logarithmic")
    x += 0.15 * scipy.signal.chirp(t, 300, seconds, 3000) * (1 + np.sin(2 * np.pi * 4 * t)) / 2
    return x + 0.05 * np.random.default_rng(seed).standard_normal(t.size)


def write_wav(path, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Write a 16-bit PCM WAV (as CREMA-D's and ffmpeg's) and return what soundfile reads back (float32)."""
    soundfile.write(path, chirpy(sample_rate, seconds, seed), sample_rate, subtype="PCM_16")
    waveform, rate = soundfile.read(path, dtype="float32")
    assert rate == sample_rate
    return waveform


def test_presets_file_has_the_documented_presets():
    presets = load_presets()
    assert set(DOCUMENTED_SHAPES) <= set(presets)
    assert {p["kind"] for p in presets.values()} == {"stft_log", "kaldi_fbank", "log_mel"}
    assert all(p["resampler"] in RESAMPLERS for p in presets.values())


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
    s = spectrogram(tone(1000, 22050, 2.0), 22050, "ogm_cremad")  # (freq, time)
    assert s.mean(axis=1).argmax() == round(1000 * 512 / 22050)  # bin 23


def test_avdigits_tone_peaks_in_the_mel_band_that_contains_it():
    s = spectrogram(tone(1000, 16000, 2.0), 16000, "avdigits")  # (mel, time)
    band = s[:, :50].mean(axis=1).argmax()  # first 1.5 s: all tone
    # HTK mel band m spans points m .. m + 2 of n_mels + 2 points evenly spaced in mel over [0, 8000] Hz
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(mel(0), mel(8000), 64 + 2))
    assert edges[band] < 1000 < edges[band + 2]


def test_ks_fbank_peak_bin_rises_with_tone_frequency():
    peaks = []
    for f in [250, 500, 1000, 2000, 4000]:
        s = spectrogram(tone(f, 16000, 2.0), 16000, "ks_fbank")  # (time, mel)
        peaks.append(s[:150].mean(axis=0).argmax())  # 2 s = 198 real frames; pad after
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
    return np.clip(np.tile(x, 3)[: 22050 * 3], -1.0, 1.0)


@pytest.mark.slow
def test_ogm_cremad_matches_librosa():
    """Criterion: on magnitudes (exp of the output minus eps), the largest absolute difference is below
    1e-4 of the largest magnitude; and in the log domain every bin agrees to 1e-5 (float32 rounding:
    bml computes the FFT in float64 and stores complex64, as librosa.stft does)."""
    librosa = pytest.importorskip("librosa")
    x = speechlike(22050, 1.7)
    ref = np.abs(librosa.stft(ogm_waveform(x), n_fft=512, hop_length=353))  # centre, zero pad (>= 0.10)
    out = spectrogram(x, 22050, "ogm_cremad")
    assert out.shape == ref.shape
    mag = np.exp(out.astype(np.float64)) - 1e-7
    assert np.abs(mag - ref).max() / ref.max() < 1e-4
    assert np.abs(out - np.log(ref + 1e-7)).max() < 1e-5


@pytest.mark.parametrize("resampler", ["soxr_hq", "soxr_mq"])
def test_ogm_cremad_from_the_16k_wav_matches_librosa_load(tmp_path, resampler):
    """CREMA-D's WAVs are 16 kHz; the authors call librosa.load(path, sr=22050) (soxr_hq by default). Every
    bin must agree to float32 rounding (1e-5 in the log domain), including the near-empty rows above 8 kHz,
    the old Nyquist, where another resampler (torchaudio's sinc) is several log units off. A second
    resampler checks that the preset's `resampler` constant is the one used."""
    librosa = pytest.importorskip("librosa")
    path = tmp_path / "1001_DFA_ANG_XX.wav"
    waveform = write_wav(path, 16000, 2.3)
    samples, rate = librosa.load(path, sr=22050, res_type=resampler)  # the authors' call (res_type default)
    ref = np.log(np.abs(librosa.stft(ogm_waveform(samples), n_fft=512, hop_length=353)) + 1e-7)
    out = spectrogram(waveform, 16000, dict(load_presets()["ogm_cremad"], resampler=resampler))
    assert out.shape == ref.shape == (257, 188)
    assert np.abs(out - ref).max() < 1e-5
    assert (ref[-60:] < -8).mean() > 0.5  # the test reaches the near-empty rows it is about


def test_ogm_cremad_resamplers_differ_above_the_old_nyquist():
    """The `resampler` constant matters: soxr_hq and soxr_qq give different rows above 8 kHz."""
    x = chirpy(16000, 2.0).astype(np.float32)
    hq = spectrogram(x, 16000, "ogm_cremad")
    qq = spectrogram(x, 16000, dict(load_presets()["ogm_cremad"], resampler="soxr_qq"))
    rows_above_8k = slice(round(8000 * 512 / 22050) + 2, None)
    assert np.abs(hq[rows_above_8k] - qq[rows_above_8k]).max() > 1.0


def test_ogm_cremad_matches_numpy():
    """Same criterion against a float64 numpy STFT: zero-pad n_fft // 2, periodic hann, rfft."""
    x = speechlike(22050, 1.7, seed=1)
    y = np.pad(ogm_waveform(x).astype(np.float64), 256)  # center=True, constant
    frames = np.lib.stride_tricks.sliding_window_view(y, 512)[::353]  # (188, 512)
    ref = np.abs(np.fft.rfft(frames * scipy.signal.get_window("hann", 512), axis=1)).T  # (257, 188)
    out = spectrogram(x, 22050, "ogm_cremad")
    assert out.shape == ref.shape == (257, 188)
    mag = np.exp(out.astype(np.float64)) - 1e-7
    assert np.abs(mag - ref).max() / ref.max() < 1e-4


def vggsound_reference(samples: np.ndarray, rate: int, start: int) -> np.ndarray:
    """OGM-GE's VGGSound loader written out (dataset/VGGSoundDataset.py), with the random start fixed."""
    librosa = pytest.importorskip("librosa")
    while len(samples) / rate < 10.0:
        samples = np.tile(samples, 2)
    crop = samples[start : start + rate * 5].copy()
    crop[crop > 1.0] = 1.0
    crop[crop < -1.0] = -1.0
    return np.log(np.abs(librosa.stft(crop, n_fft=256, hop_length=128)) + 1e-7)


@pytest.mark.parametrize("seconds", [3.0, 7.7, 10.0, 12.5])
def test_ogm_vggsound_matches_the_authors_steps(tmp_path, seconds):
    """16 kHz WAV (as the authors' ffmpeg -ar 16000 wrote them) -> librosa.load(sr=16000), doubled to >= 10 s,
    5 s from 2.5 s (bml's fixed centre of randint(0, 5 s)), stft 256/128, log(|S| + 1e-7)."""
    librosa = pytest.importorskip("librosa")
    path = tmp_path / "---g-f_I2yQ_000001.wav"
    waveform = write_wav(path, 16000, seconds, seed=1)
    samples, rate = librosa.load(path, sr=16000, mono=True)
    ref = vggsound_reference(samples, rate, start=rate * 5 // 2)
    out = spectrogram(waveform, 16000, "ogm_vggsound")
    assert out.shape == ref.shape == (129, 626)
    assert np.abs(out - ref).max() < 1e-5


def test_ogm_vggsound_from_a_44k_wav_resamples_as_librosa_load(tmp_path):
    librosa = pytest.importorskip("librosa")
    path = tmp_path / "clip_44k.wav"
    waveform = write_wav(path, 44100, 4.0, seed=2)
    samples, rate = librosa.load(path, sr=16000, mono=True)
    out = spectrogram(waveform, 44100, "ogm_vggsound")
    assert np.abs(out - vggsound_reference(samples, rate, start=40000)).max() < 1e-5


def test_ogm_vggsound_clips_to_unit_range_like_the_authors():
    x = speechlike(16000, 4.2, seed=6)  # float waveform with samples at 1.5 (a WAV could not hold them)
    ref = vggsound_reference(x, 16000, start=40000)
    assert np.abs(spectrogram(x, 16000, "ogm_vggsound") - ref).max() < 1e-5


def test_ogm_vggsound_crop_is_the_centre_of_a_10s_clip():
    """A 10 s clip that is loud only in 2.5-7.5 s: every frame of the crop is loud (frames centred on the
    crop's edges see half of it)."""
    x = np.zeros(160000, dtype=np.float32)
    x[40000:120000] = chirpy(16000, 5.0).astype(np.float32)
    s = spectrogram(x, 16000, "ogm_vggsound")
    assert s.mean(axis=0)[1:-1].min() > -6 and s.mean(axis=0)[[0, -1]].min() > -9
    silent_edges = spectrogram(np.roll(x, 60000), 16000, "ogm_vggsound")
    assert silent_edges.mean(axis=0).min() < -15  # the moved sound leaves silence inside the crop


def kaldi_fbank_numpy(x: np.ndarray, sample_rate: int, window_type: str) -> np.ndarray:
    """Kaldi's fbank (feature-window.cc, mel-computations.cc) from its definition, float64, with ks_fbank's
    constants: 25 ms frames every 10 ms (snip edges), dither 0, remove DC, pre-emphasis 0.97, hanning or
    povey window, zero-pad to 512, power spectrum, 128 triangles evenly spaced on Kaldi's mel scale
    1127 ln(1 + f / 700) between 20 Hz and Nyquist over FFT bins 0 .. 255, log floored at float32 epsilon."""
    frame, shift, n_fft = sample_rate * 25 // 1000, sample_rate * 10 // 1000, 512
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), frame)[::shift]  # (F, frame)
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / (frame - 1))
    if window_type == "povey":
        window = window**0.85
    power = np.abs(np.fft.rfft(frames * window, n=n_fft)) ** 2  # (F, 257)
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(sample_rate / 2), 128 + 2)  # left, centre, right of each bank
    bin_mel = mel(np.arange(n_fft // 2) * sample_rate / n_fft)  # (256,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    banks = np.maximum(0.0, np.minimum((bin_mel - left) / (centre - left), (right - bin_mel) / (right - centre)))
    return np.log(np.maximum(power[:, : n_fft // 2] @ banks.T, np.finfo(np.float32).eps))  # (F, 128)


@pytest.mark.parametrize("window_type", ["hanning", "povey"])  # the preset's, and Kaldi's default
@pytest.mark.parametrize("seconds", [0.5, 7.0, 11.0])
def test_ks_fbank_matches_a_numpy_kaldi_fbank(window_type, seconds):
    """AST's steps around it: subtract the clip mean, zero-pad (after the log) or cut to 1024 frames, then
    (x - mean) / (2 std). The reference is float64; Kaldi and torchaudio (so the authors and bml) run in
    float32, mel weights included. Criterion, in log units before the division by 2 std: bins within 5 log
    units of their frame's loudest agree to 3e-4 (float32 mel weights: up to 1.4e-5 off); every bin to 3e-3
    (the lowest banks hold ~1e-6 of a frame's energy after pre-emphasis, where float32 FFT rounding shows)."""
    cfg = dict(load_presets()["ks_fbank"], window_type=window_type)
    x = chirpy(16000, seconds, seed=3).astype(np.float32)
    fbank = kaldi_fbank_numpy(x - x.astype(np.float64).mean(), 16000, window_type)[:1024]
    n = fbank.shape[0]
    out = spectrogram(x, 16000, cfg)
    assert out.shape == (1024, 128)
    np.testing.assert_allclose(out[n:], (0 - -4.503877) / (5.141276 * 2), rtol=1e-6)  # zero fbank, normalised
    diff = np.abs(out[:n] * (5.141276 * 2) + -4.503877 - fbank)
    loud = fbank > fbank.max(axis=1, keepdims=True) - 5
    assert diff[loud].max() < 3e-4
    assert diff.max() < 3e-3


@pytest.mark.parametrize("n_samples", [160, 16000, 164080, 192000])  # < 1 frame, 1 s, exactly 1024 frames, 12 s
def test_ks_fbank_matches_torchaudio_kaldi_fbank(n_samples):
    """The authors' exact call (OGM-GE data/KineticSound/process_audio.py, AST's loader)."""
    x = chirpy(16000, n_samples / 16000, seed=4).astype(np.float32)[:n_samples]
    w = torch.from_numpy(x)[None]
    w = w - w.mean()
    w = torch.nn.functional.pad(w, (0, max(0, 400 - n_samples)))  # bml: a clip shorter than a frame -> 1 frame
    fbank = torchaudio.compliance.kaldi.fbank(
        w,
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    p = 1024 - fbank.shape[0]
    fbank = torch.nn.functional.pad(fbank, (0, 0, 0, p)) if p > 0 else fbank[:1024]
    ref = ((fbank - -4.503877) / (5.141276 * 2)).numpy()
    assert np.abs(spectrogram(x, 16000, "ks_fbank") - ref).max() < 1e-5


# --- batched --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(DOCUMENTED_SHAPES))
def test_spectrograms_equal_spectrogram_per_clip(preset):
    """Mixed lengths (shorter and longer than each preset's window), at the preset's rate and at another."""
    rng = np.random.default_rng(5)
    for rate in [load_presets()[preset]["sample_rate"], 44100]:
        clips = [chirpy(rate, s, seed=i).astype(np.float32) for i, s in enumerate(rng.uniform(0.05, 12.0, 5))]
        clips.append(speechlike(rate, 0.01))
        batch = spectrograms(clips, rate, preset)
        assert batch.dtype == np.float32 and batch.shape == (len(clips),) + output_shape(preset)
        for clip, out in zip(clips, batch, strict=True):
            np.testing.assert_allclose(out, spectrogram(clip, rate, preset), rtol=0, atol=1e-5)
        assert not np.allclose(batch[0], batch[1])


def test_spectrograms_names_the_bad_clip():
    with pytest.raises(ValueError, match="no waveforms"):
        spectrograms([], 16000, "avdigits")
    good = tone(1000, 16000, 1.0)
    with pytest.raises(ValueError, match="clip 1 of 3.*empty"):
        spectrograms([good, np.zeros(0, dtype=np.float32), good], 16000, "avdigits")
    with pytest.raises(ValueError, match="clip 2 of 3.*1-D"):
        spectrograms([good, good, np.zeros((2, 100), dtype=np.float32)], 16000, "avdigits")


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


def test_unknown_resampler_is_refused_with_the_choices():
    cfg = dict(load_presets()["ogm_cremad"], name="custom", resampler="kaiser_best")
    with pytest.raises(ValueError, match="custom.*kaiser_best.*soxr_hq"):
        spectrogram(tone(1000, 16000, 1.0), 16000, cfg)
