"""Kind `flow`: optical flow (u, v) as the two-stream releases store it: Farneback (bml/data/flow.py) between
the video's native frames, or a precomputed TV-L1 release's JPEGs (the clip's path is its `u/<clip>` folder)."""

from __future__ import annotations

import math
import os

from bml.kinds.base import RAW_RGB, SPAN_COUNTER, Kind, frames_field, rgb_frames

FLOW_FIRST = "frame000001.jpg"  # a TV-L1 release numbers flow frames from 1 (bml/data/flow.py)


class Flow(Kind):
    name = "flow"
    description = "optical flow (uint8, T x 2 x S x S; u and v quantised as the two-stream releases store them)"
    frame_like = True
    min_frames = 2  # one flow frame needs two video frames

    def reads_folder(self, path: str) -> bool:
        return os.path.isdir(path)

    def check_folder(self, path: str) -> None:
        from bml.data.ffmpeg import MediaError

        if not os.path.isfile(os.path.join(path, FLOW_FIRST)):
            raise MediaError(f"{path}: no flow frame {FLOW_FIRST} in this flow folder")

    def ffmpeg_output(self, source: int, settings: dict, tag: str) -> list[str]:
        # every frame at the video's own rate: flow is computed between neighbouring native frames
        scale = f"{SPAN_COUNTER.format(tag=tag)},scale={settings['size']}:{settings['size']}:flags=area"
        return ["-map", f"{source}:v:0", "-vf", scale, "-fps_mode", "passthrough", *RAW_RGB]

    def from_pipe(self, raw: bytes, settings: dict, rate: int | None) -> dict:
        return rgb_frames(raw, settings)

    def read_folder(self, path: str, job, settings: dict, fps: float | None) -> dict:
        """`frames` flow frames of a TV-L1 release folder (its u/<clip> folder), evenly spaced over the span:
        (frames, 2, S, S) uint8. Flow frame k (1-based) is the motion from video frame k to k + 1, at
        (k - 1) / fps seconds."""
        import numpy as np

        from bml.data.decode import select_frames
        from bml.data.ffmpeg import MediaError
        from bml.data.flow import flow_v_dir, read_flow_frames

        n_flow = sum(1 for name in os.listdir(path) if name.startswith("frame") and name.endswith(".jpg"))
        numbers = list(range(1, n_flow + 1))
        if job.start > 0 or job.length is not None:
            if not fps:
                raise MediaError(f"{path}: a flow release read over a span needs the clip's video for its frame rate")
            end = math.inf if job.length is None else job.start + job.length
            numbers = [k for k in numbers if job.start - 1e-6 <= (k - 1) / fps and k / fps < end - 1e-6]
            if not numbers:
                raise MediaError(f"{path}: no flow frame in the span {job.start:.2f}-{end:.2f} s ({n_flow} frames)")
        chosen = [numbers[i] for i in select_frames(len(numbers), settings["frames"])]
        try:
            flow = read_flow_frames(path, flow_v_dir(path), chosen, settings["size"])
        except (OSError, ValueError) as err:
            raise MediaError(f"{path}: {err}") from None
        return {"": flow, ":release": np.asarray(True)}

    def features(self, decoded: list[dict], m: str, settings: dict) -> list:
        import numpy as np

        from bml.data.decode import select_frames
        from bml.data.flow import farneback_flow  # OpenCV: imported only where flow is asked

        out = []
        for d in decoded:
            if f"{m}:release" in d:
                out.append(d[m])
                continue
            frames = d[m]  # native frames: flow k is from frame k to k + 1
            at = select_frames(len(frames) - 1, settings["frames"])
            out.append(np.stack([farneback_flow(frames[k : k + 2])[0] for k in at]))  # (T, 2, S, S)
        return out

    def field(self, settings: dict) -> tuple[str, tuple[int, ...]]:
        return frames_field(settings, channels=2)

    def prepare(self, x, train_cfg: dict):
        """Centred on the releases' zero (128) and scaled to [-1, 1]."""
        return (x.float() - 127.5) / 127.5

    def encoder(self, family: str):
        from bml.models.encoders import ResNet18Visual, SmallVisualCNN

        return {"resnet18": ResNet18Visual, "small_cnn": SmallVisualCNN}[family](in_channels=2)
