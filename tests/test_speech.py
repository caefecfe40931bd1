"""Spoken digits (bml.data.speech): every default voice works, output is reproducible in any process."""

import multiprocessing
import stat

import numpy as np
import pytest

from bml.data import speech


def _f0(wave: np.ndarray, sample_rate: int) -> float:
    """Rough pitch (Hz) of the loudest 40 ms frame, from its autocorrelation peak in 60-400 Hz."""
    n = int(0.04 * sample_rate)
    frames = [wave[i : i + n] for i in range(0, len(wave) - n, n // 2)]
    frame = max(frames, key=lambda f: float(np.sum(f**2)))
    frame = frame - frame.mean()
    ac = np.correlate(frame, frame, "full")[n - 1 :]
    lo, hi = sample_rate // 400, sample_rate // 60
    return sample_rate / (lo + int(np.argmax(ac[lo:hi])))


def test_public_constants():
    assert speech.DIGIT_WORDS == ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert len(speech.VOICES) >= 8 and len(set(speech.VOICES)) == len(speech.VOICES)


@pytest.mark.parametrize("voice", speech.VOICES)
def test_every_voice_speaks_every_digit(voice):
    for digit in range(10):
        wave, sample_rate = speech.speak_digit(digit, voice=voice)
        assert sample_rate == 22050
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert 0.2 <= len(wave) / sample_rate <= 2.0, (voice, digit, len(wave) / sample_rate)
        assert np.all(np.abs(wave) <= 1.0)
        assert np.abs(wave).max() > 0.05 and np.sqrt(np.mean(wave**2)) > 0.005, (voice, digit)


def test_voices_sound_different():
    waves = [speech.speak_digit(7, voice=v)[0] for v in speech.VOICES]
    for i in range(len(waves)):
        for j in range(i + 1, len(waves)):
            assert not np.array_equal(waves[i], waves[j]), (speech.VOICES[i], speech.VOICES[j])


def test_deterministic_whatever_was_spoken_before():
    """Every listed voice gives the same samples first thing and after every other voice, in any order."""
    first = {v: speech.speak_digit(7, voice=v, rate=160, pitch=45)[0] for v in speech.VOICES}
    rng = np.random.default_rng(0)
    for _ in range(2):
        for i in rng.permutation(len(speech.VOICES)):
            voice = speech.VOICES[i]
            speech.synthesize("three", voice=voice, rate=int(rng.integers(100, 300)), pitch=int(rng.integers(0, 100)))
            again = speech.speak_digit(7, voice=voice, rate=160, pitch=45)[0]
            assert np.array_equal(first[voice], again), voice


def test_faster_rate_is_shorter():
    lengths = [len(speech.speak_digit(7, rate=rate)[0]) for rate in (100, 170, 300)]
    assert lengths[0] > lengths[1] > lengths[2]


def test_pitch_changes_the_signal():
    low, sample_rate = speech.speak_digit(1, pitch=20)
    high, _ = speech.speak_digit(1, pitch=80)
    assert not np.array_equal(low, high)
    assert _f0(high, sample_rate) > 1.4 * _f0(low, sample_rate)


@pytest.mark.parametrize("voice", ["en-GB", "no-such-voice", "en+nosuch", ""])
def test_bad_voice_raises_naming_it(voice):
    with pytest.raises(ValueError, match="refuses the voice") as info:
        speech.speak_digit(3, voice=voice)
    assert repr(voice) in str(info.value) and speech.VOICES[0] in str(info.value)


def test_bad_arguments():
    for text in ("", "   "):
        with pytest.raises(ValueError, match="non-empty"):
            speech.synthesize(text)
    for digit in (-1, 10, 2.0, True):
        with pytest.raises(ValueError, match="0-9"):
            speech.speak_digit(digit)
    with pytest.raises(ValueError, match="rate"):
        speech.speak_digit(1, rate=20)
    with pytest.raises(ValueError, match="pitch"):
        speech.speak_digit(1, pitch=101)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_same_samples_in_worker_processes(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    jobs = [(0, "en", 170, 50), (5, "gmw/en-GB-x-rp+f4", 220, 70), (8, "en+croak", 140, 30), (2, "en+klatt", 170, 50)]
    with multiprocessing.get_context(method).Pool(2) as pool:
        in_workers = pool.starmap(speech.speak_digit, jobs)
    for job, (wave, sample_rate) in zip(jobs, in_workers, strict=True):
        expected, expected_rate = speech.speak_digit(*job)
        assert sample_rate == expected_rate
        assert np.array_equal(wave, expected), job


def test_command_fallback_when_library_is_missing(monkeypatch, tmp_path):
    import io
    import wave as wavelib

    expected, sample_rate = speech.speak_digit(6)
    pcm = np.round(expected * 32768).astype("<i2")
    buffer = io.BytesIO()
    with wavelib.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    data = bytearray(buffer.getvalue())
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"  # the unknown sizes espeak-ng writes to a pipe
    (tmp_path / "six.wav").write_bytes(bytes(data))
    fake = tmp_path / "espeak-ng"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\ncat {tmp_path}/six.wav\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)

    def no_library():
        raise ImportError("no espeakng_loader")

    monkeypatch.setattr(speech, "_library_paths", no_library)
    monkeypatch.setattr(speech, "_BACKEND", None)
    monkeypatch.setattr(speech.shutil, "which", lambda name: str(fake) if name == "espeak-ng" else None)
    wave, rate = speech.speak_digit(6, voice="en-gb-x-gbclan+f1", rate=200, pitch=60)
    assert rate == sample_rate and np.array_equal(wave, expected)
    assert (tmp_path / "args").read_text().split() == [
        "-v",
        "en-gb-x-gbclan+f1",
        "-s",
        "200",
        "-p",
        "60",
        "--stdout",
        "--",
        "six",
    ]


def test_clear_error_when_nothing_is_installed(monkeypatch):
    def no_library():
        raise ImportError("no espeakng_loader")

    monkeypatch.setattr(speech, "_library_paths", no_library)
    monkeypatch.setattr(speech, "_BACKEND", None)
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeakng-loader.*espeak-ng"):
        speech.speak_digit(1)
