"""Spoken digits for the embedded avdigits dataset, synthesised with espeak-ng.

The avdigits generator needs short, varied, *reproducible* recordings of "zero" .. "nine". eSpeak NG is a
small formant synthesiser that runs on the CPU in milliseconds, so the clips can be rendered on the fly.
It is driven through ctypes from the shared library and voice data shipped in the ``espeakng-loader``
wheel, so no system package is needed. Debian's ``espeak-ng`` command is used only when that library
cannot be loaded.

Reproducibility: libespeak-ng keeps synthesis state in C statics (pitch-flutter phase, gain control,
noise resonators) that survive between utterances and even ``espeak_Terminate``/``espeak_Initialize``,
so in one long-lived instance the samples depend on what was spoken before. Every call therefore loads
a fresh private copy of the library (dlopen with RTLD_LOCAL, initialise, speak, terminate, dlclose):
the same arguments give bit-identical samples in any order, in any process, at about 200 digits per
second. This only holds while nothing else in the process keeps libespeak-ng loaded (a warning says so).
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import os
import shutil
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

# English accents crossed with voice variants (female f*, male m*, klatt, croak). Each one was checked to
# load, to speak every digit audibly, and to give the same samples whatever was spoken before it in the
# process. en+f3, en-us+f2, en-029+f5 and en+whisper failed that last check (their flutter and breath
# noise carry state inside libespeak-ng from one utterance to the next), so they are left out: the
# dataset must decode identically for the same seed, whatever the number of workers.
VOICES: tuple[str, ...] = (
    "en",
    "en-us",
    "en-029",
    "en-gb-scotland",
    "gmw/en-GB-x-rp",
    "en-gb-x-gbclan+f1",
    "gmw/en-GB-x-rp+f4",
    "en+m3",
    "en-gb-scotland+m7",
    "en+klatt",
    "en-us+klatt4",
    "en+croak",
)

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

RATE_RANGE = (80, 450)  # words per minute that espeak-ng accepts
PITCH_RANGE = (0, 100)

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_dlclose = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary  # FreeLibrary on Windows


class _Backend(NamedTuple):
    kind: str  # "library" (espeakng-loader's libespeak-ng) or "command" (the espeak-ng executable)
    path: str  # the shared library or the executable
    data_path: str  # espeak-ng-data for the library; "" for the command


# Resolved lazily, once per process: a forked child sees another pid and resolves (and checks) again.
_LOCK = threading.Lock()
_BACKEND: _Backend | None = None
_BACKEND_PID: int | None = None
_WARNED_SHARED = False

# Fork only between two syntheses, so that a child never inherits a half-used library or a held lock.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_LOCK.acquire, after_in_parent=_LOCK.release, after_in_child=_LOCK.release)


def synthesize(text: str, voice: str = "en", rate: int = 170, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak `text`; return (float32 mono waveform in [-1, 1], sample rate in Hz).

    `rate` is in words per minute (80-450) and `pitch` is 0-100 (50 is the voice's normal pitch).
    Raises ValueError for empty text, out-of-range settings or a voice espeak-ng refuses, and
    RuntimeError when neither the espeakng-loader library nor the espeak-ng command is available.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text to speak must be a non-empty string, got {text!r}")
    if "\0" in text:
        raise ValueError("text to speak must not contain NUL characters")
    if not isinstance(voice, str) or not voice:
        raise _unknown_voice(voice)
    rate, pitch = int(rate), int(pitch)
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ValueError(f"rate must be {RATE_RANGE[0]}-{RATE_RANGE[1]} words per minute, got {rate}")
    if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
        raise ValueError(f"pitch must be {PITCH_RANGE[0]}-{PITCH_RANGE[1]}, got {pitch}")

    with _LOCK:
        backend = _backend()
        if backend.kind == "library":
            samples, sample_rate = _speak_with_library(backend, text, voice, rate, pitch)
    if backend.kind == "command":  # a separate process: no shared state, no lock needed
        samples, sample_rate = _speak_with_command(backend.path, text, voice, rate, pitch)
    if samples.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice!r}")
    return samples.astype(np.float32) / np.float32(32768.0), sample_rate


def speak_digit(digit: int, voice: str = "en", rate: int = 170, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak the English word for `digit` (0-9); see `synthesize`."""
    if isinstance(digit, bool) or not isinstance(digit, int | np.integer) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an integer 0-9, got {digit!r}")
    return synthesize(DIGIT_WORDS[int(digit)], voice=voice, rate=rate, pitch=pitch)


def _unknown_voice(voice: str) -> ValueError:
    return ValueError(f"espeak-ng refuses the voice {voice!r}; voices known to work: {', '.join(VOICES)}")


def _backend() -> _Backend:
    """The backend for this process, found on first use (call with _LOCK held)."""
    global _BACKEND, _BACKEND_PID
    if _BACKEND is None or _BACKEND_PID != os.getpid():
        _BACKEND, _BACKEND_PID = _find_backend(), os.getpid()
    return _BACKEND


def _library_paths() -> tuple[str, str]:
    """(libespeak-ng path, espeak-ng-data path) from the espeakng-loader wheel."""
    import espeakng_loader

    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _find_backend() -> _Backend:
    """Prefer the wheel's library (checked by initialising it once); fall back to the espeak-ng command."""
    try:
        lib_path, data_path = _library_paths()
        with _fresh_library(lib_path) as lib:
            sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(data_path), 0)
            lib.espeak_Terminate()
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with {sample_rate} (data at {data_path})")
        return _Backend("library", lib_path, data_path)
    except (ImportError, OSError, AttributeError, RuntimeError) as exc:
        library_error = exc
    command = shutil.which("espeak-ng")
    if command is not None:
        return _Backend("command", command, "")
    raise RuntimeError(
        "espeak-ng is not available: install the Python package espeakng-loader "
        "(pip install espeakng-loader, a dependency of bml) or the system package espeak-ng "
        "(apt-get install espeak-ng). "
        f"Loading the library failed with: {library_error!r}"
    )


def _warn_if_shared(lib_path: str) -> None:
    """Warn (once) if other code keeps libespeak-ng loaded: dlopen would then hand back its used copy."""
    global _WARNED_SHARED
    no_load = getattr(os, "RTLD_NOLOAD", 0)  # POSIX only
    if _WARNED_SHARED or not no_load:
        return
    try:  # succeeds only if the library is loaded already; ours is always closed between calls
        _dlclose(ctypes.CDLL(lib_path, mode=ctypes.RTLD_LOCAL | no_load)._handle)
    except OSError:
        return
    _WARNED_SHARED = True
    warnings.warn(
        f"{lib_path} is already loaded by other code in this process; spoken digits may then "
        "depend on what was synthesised before",
        RuntimeWarning,
        stacklevel=4,
    )


@contextlib.contextmanager
def _fresh_library(lib_path: str) -> Iterator[ctypes.CDLL]:
    """A newly loaded libespeak-ng with pristine C statics, unloaded on exit (see the module docstring)."""
    lib = ctypes.CDLL(lib_path, mode=ctypes.RTLD_LOCAL)
    try:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        yield lib
    finally:
        _dlclose(lib._handle)


def _speak_with_library(backend: _Backend, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    # espeak-ng silently ignores an unknown variant ("en+nosuch" speaks as "en"), so check it here.
    variant = voice.partition("+")[2]
    variant_file = Path(backend.data_path) / "voices" / "!v" / variant
    if variant and not variant.isdigit() and not variant_file.is_file():
        raise _unknown_voice(voice)

    _warn_if_shared(backend.path)
    chunks: list[bytes] = []

    def collect(wav: ctypes._Pointer, numsamples: int, events: int | None) -> int:
        if wav and numsamples > 0:
            chunks.append(ctypes.string_at(wav, numsamples * 2))  # the buffer is reused after we return
        return 0  # 0 = carry on

    callback = _SynthCallback(collect)  # must outlive the synthesis
    with _fresh_library(backend.path) as lib:
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(backend.data_path), 0)
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with {sample_rate}")
        try:
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise _unknown_voice(voice)
            lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
            encoded = text.encode("utf-8") + b"\0"
            status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            if status != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            lib.espeak_Synchronize()
        finally:
            lib.espeak_Terminate()
    return np.frombuffer(b"".join(chunks), dtype=np.int16), sample_rate


def _speak_with_command(command: str, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    argv = [command, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", "--", text]
    result = subprocess.run(argv, capture_output=True, check=False)
    message = result.stderr.decode(errors="replace").strip()
    if result.returncode != 0 or not result.stdout:
        if "voice" in message.lower():
            raise _unknown_voice(voice)
        raise RuntimeError(f"{' '.join(argv)} failed (exit {result.returncode}): {message}")
    return _parse_wav(result.stdout)


def _parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of a mono 16-bit PCM WAV, tolerating the bogus sizes that
    espeak-ng writes when stdout is a pipe (it cannot seek back to fill them in)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not write a WAV file")
    pos, sample_rate = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt, channels = int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little")
            bits = int.from_bytes(body[14:16], "little")
            if (fmt, channels, bits) != (1, 1, 16):
                raise RuntimeError(
                    f"expected mono 16-bit PCM from espeak-ng, got format {fmt}, {channels} channels, {bits} bits"
                )
            sample_rate = int.from_bytes(body[4:8], "little")
        elif chunk_id == b"data":
            if sample_rate is None:
                raise RuntimeError("WAV from espeak-ng has no fmt chunk before its data")
            body = body[: len(body) // 2 * 2]
            return np.frombuffer(body, dtype="<i2").astype(np.int16), sample_rate
        pos += 8 + size + (size & 1)
    raise RuntimeError("WAV from espeak-ng has no data chunk")
