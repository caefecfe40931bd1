"""Kind `frames`: RGB frames of the video track at the recipe's rate and size, `frames` of them evenly spaced."""

from __future__ import annotations

from bml.kinds.base import RAW_RGB, SPAN_COUNTER, Kind, frames_field, rgb_frames


class Frames(Kind):
    name = "frames"
    description = "RGB frames (uint8, T x 3 x S x S) from the video track"
    frame_like = True
    augmented = True

    def ffmpeg_output(self, source: int, settings: dict, tag: str) -> list[str]:
        rate = f"{SPAN_COUNTER.format(tag=tag)},fps={settings['fps']}"
        scale = f"{rate},scale={settings['size']}:{settings['size']}:flags=area"
        return ["-map", f"{source}:v:0", "-vf", scale, *RAW_RGB]

    def from_pipe(self, raw: bytes, settings: dict, rate: int | None) -> dict:
        return rgb_frames(raw, settings)

    def features(self, decoded: list[dict], m: str, settings: dict) -> list:
        from bml.data.decode import select_frames

        return [d[m][select_frames(len(d[m]), settings["frames"])].transpose(0, 3, 1, 2) for d in decoded]

    def field(self, settings: dict) -> tuple[str, tuple[int, ...]]:
        return frames_field(settings, channels=3)

    def prepare(self, x, train_cfg: dict):
        """Float, normalised per channel with the protocol's statistics (ImageNet's in the papers)."""
        import torch

        mean = torch.tensor(train_cfg["frame_mean"], device=x.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(train_cfg["frame_std"], device=x.device).view(1, 1, 3, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def encoder(self, family: str):
        from bml.models.encoders import ResNet18Visual, SmallVisualCNN

        return {"resnet18": ResNet18Visual, "small_cnn": SmallVisualCNN}[family](in_channels=3)
