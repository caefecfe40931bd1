"""Kind `audio`: the audio track as a log spectrogram (bml/data/audio.py's presets), float16 in the record."""

from __future__ import annotations

from bml.kinds.base import Kind


class Audio(Kind):
    name = "audio"
    description = "a spectrogram (float16, the preset's shape) from the audio track"
    stream = "audio"
    uses_preset = True
    uses_torch = True
    batch_dtype = "float32"

    def ffmpeg_output(self, source: int, settings: dict, tag: str) -> list[str]:
        # mono float32 at the file's own rate: the preset resamples (bml/data/audio.py)
        return ["-map", f"{source}:a:0", "-ac", "1", "-filter_threads", "1", "-f", "f32le"]

    def from_pipe(self, raw: bytes, settings: dict, rate: int | None) -> dict:
        import numpy as np

        return {"": np.frombuffer(raw, dtype="<f4"), ":rate": np.asarray(rate)}

    def features(self, decoded: list[dict], m: str, settings: dict) -> list:
        """Spectrograms in one batched call per sample rate (equal to one clip at a time, tests/test_extract.py);
        a clip that fails is named by computing its chunk one clip at a time."""
        import numpy as np

        from bml.data.audio import spectrogram, spectrograms
        from bml.data.decode import or_error

        out: list = [None] * len(decoded)
        preset = settings["preset"]
        for rate in sorted({int(d[f"{m}:rate"]) for d in decoded}):
            idx = [i for i, d in enumerate(decoded) if int(d[f"{m}:rate"]) == rate]
            try:
                specs = spectrograms([decoded[i][m] for i in idx], rate, preset)
            except ValueError:
                specs = [or_error(ValueError, spectrogram, decoded[i][m], rate, preset) for i in idx]
            for i, spec in zip(idx, specs, strict=True):
                out[i] = spec if isinstance(spec, ValueError) else spec.astype(np.float16)
        return out

    def field(self, settings: dict) -> tuple[str, tuple[int, ...]]:
        from bml.data.audio import output_shape

        return "<f2", tuple(output_shape(settings["preset"]))

    def encoder(self, family: str):
        from bml.models.encoders import ResNet18Audio, SmallAudioCNN

        return {"resnet18": ResNet18Audio, "small_cnn": SmallAudioCNN}[family]()
