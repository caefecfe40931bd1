"""What a modality kind is: everything bml does differently for audio, RGB frames or optical flow, in one class.

A kind says which ffmpeg stream it is decoded from and with which output options, how a decoded clip becomes
what a packed record stores, the record field's type and shape, how the loader samples and prepares it for an
encoder, and which encoder class each family uses for it. bml/kinds/__init__.py registers one instance per
kind; every other module asks the registry, never the kind's name. Torch-free at import (the plan reads the
registry): numpy, torch and the encoders are imported inside the methods that use them.
"""

from __future__ import annotations


class Kind:
    name: str
    description: str  # what a record stores, for `bml check-config` and the docs
    stream = "video"  # the ffmpeg stream it is decoded from: "video" or "audio"
    min_frames = 1  # fewer decoded frames than this in the span and the clip is refused
    frame_like = False  # stored as (T, C, S, S) frames: the loader samples T of them per sample
    augmented = False  # the protocol's frame augmentation (random resized crop + flip) applies to it
    uses_preset = False  # its recipe names a preset of params/audio_presets.yaml
    uses_torch = False  # its features need torch at extraction (one torch thread there)

    def reads_folder(self, path: str) -> bool:
        """Whether the clip's path is a folder read without ffmpeg (a precomputed release), not a media file."""
        return False

    def check_folder(self, path: str) -> None:
        """MediaError if the folder reads_folder accepted cannot be used (checked before decoding)."""

    def ffmpeg_output(self, source: int, settings: dict, tag: str) -> list[str]:
        """ffmpeg's output options (before the pipe) that decode this modality from input `source`; a video
        kind's filters start with SPAN_COUNTER named `tag`."""
        raise NotImplementedError

    def from_pipe(self, raw: bytes, settings: dict, rate: int | None) -> dict:
        """The decoded arrays of one clip from its pipe's bytes, keyed by suffix ('' the array itself)."""
        raise NotImplementedError

    def read_folder(self, path: str, job, settings: dict, fps: float | None) -> dict:
        """The decoded arrays of a folder reads_folder accepted, keyed as from_pipe keys them."""
        raise NotImplementedError

    def features(self, decoded: list[dict], m: str, settings: dict) -> list:
        """Per decoded clip, what its record stores for modality m (or the ValueError saying why it cannot)."""
        raise NotImplementedError

    def field(self, settings: dict) -> tuple[str, tuple[int, ...]]:
        """(dtype, shape) the modality takes in a packed record."""
        raise NotImplementedError

    batch_dtype = "uint8"  # the numpy type a batch carries it in (to the device, before prepare)

    def prepare(self, x, train_cfg: dict):
        """A batch on the device -> the encoder's input."""
        return x

    def encoder(self, family: str):
        """A new encoder (nn.Module) of this kind in encoder family `family`."""
        raise NotImplementedError


# The first filter of a video modality: the span's frames at the video's own rate, a null chunk (a frame the
# player repeats) counted, whatever a seek decoded before the span; ffmpeg logs its count (bml/data/decode.py).
SPAN_COUNTER = "fps@{tag}=source_fps"
RAW_RGB = ["-filter_threads", "1", "-f", "rawvideo", "-pix_fmt", "rgb24"]  # frames to a pipe, one filter thread


def frames_field(settings: dict, channels: int) -> tuple[str, tuple[int, ...]]:
    """The record field of a frame-like kind: (frames, channels, size, size) uint8."""
    return "u1", (settings["frames"], channels, settings["size"], settings["size"])


def rgb_frames(raw: bytes, settings: dict) -> dict:
    """Raw RGB24 frames of settings' size from a pipe: (n, S, S, 3) uint8, a trailing partial frame dropped."""
    import numpy as np

    size = settings["size"]
    data = np.frombuffer(raw, dtype=np.uint8)
    n = data.size // (size * size * 3)
    return {"": data[: n * size * size * 3].reshape(n, size, size, 3)}
