"""Optical flow for the RGB + flow datasets (UCF-101): computed with OpenCV's Farneback where no precomputed
release is on disk, and stored and read the way the two-stream TV-L1 releases store it, so a model sees the
same kind of input either way.

The releases write each flow component as a grey JPEG, `<flow>/u/<clip>/frame%06d.jpg` (horizontal) and
`<flow>/v/<clip>/frame%06d.jpg` (vertical): feichtenhofer/gpu_flow `compute_flow.cpp`, which made the UCF-101
`tvl1_flow` download that two-stream code reads (jeffreyyihuang/two-stream-action-recognition README), clips
the flow to [-20, 20] pixels and maps it linearly to 0..255 with rounding (its CAST macro: v > H -> 255,
v < L -> 0, else cvRound(255 (v - L) / (H - L)), L = -20, H = 20); yjxiong/dense_flow (TSN) uses the same
macro with its `-b 20` bound.

Which frames a flow frame is computed between: compute_flow.cpp writes the flow from the first video frame
to the second as frame000001.jpg, so flow frame k (1-based) is the motion from video frame k to frame k + 1
and a video of N frames has N - 1 flow frames. `farneback_flow(frames)[k - 1]` is flow frame k.

What BalanceBenchmark samples (GeWu-Lab/BalanceBenchmark, balancemm/datasets/ucf101_dataset.py): 3 segments,
ONE flow frame (u and v, 2 channels) per segment, no stacking of consecutive flow frames; with n flow files
in the clip's u folder, seg = n // 3 and segment i (0-based) reads file i*seg + max(seg // 2, 1) at test time
and a uniformly random file in [i*seg + 1, i*seg + seg] in training (`segment_flow_indices`). Each image is
resized to 224 x 224 without rescaling the flow values.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

FLOW_BOUND = 20.0  # pixels; the clip bound of the TV-L1 releases (gpu_flow compute_flow.cpp, dense_flow -b 20)
# Farneback parameters of OpenCV's own dense-flow sample (opencv/opencv samples/python/opt_flow.py):
# pyr_scale 0.5, levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma 1.2, flags 0.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def quantise_flow(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Flow in pixels -> uint8 as the releases store it: clip to [-bound, bound], map to 0..255, round."""
    scaled = (np.clip(np.asarray(flow, dtype=np.float64), -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)  # rint rounds half to even, as cvRound does on x86


def dequantise_flow(stored: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """uint8 flow image -> pixels (float32); the step is 2 * bound / 255 (0.157 px for bound 20)."""
    return (np.asarray(stored, dtype=np.float32) * (2.0 * bound / 255.0) - bound).astype(np.float32)


def farneback_flow(frames: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB consecutive frames -> (T-1, 2, H, W) uint8 flow (u, v), quantised like the
    TV-L1 releases; entry k - 1 is the flow from frame k to frame k + 1 (1-based), the release's frame k."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    if len(frames) < 2:
        raise ValueError(f"flow needs at least 2 frames, got {len(frames)}")
    grey = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    out = np.empty((len(frames) - 1, 2, *frames.shape[1:3]), dtype=np.uint8)
    for k in range(len(frames) - 1):
        flow = cv2.calcOpticalFlowFarneback(grey[k], grey[k + 1], None, **FARNEBACK)  # (H, W, 2): u, v
        out[k] = quantise_flow(flow.transpose(2, 0, 1), bound)
    return out


def flow_frame_name(k: int) -> str:
    """The release's file name of flow frame k (1-based): frame000001.jpg, ..."""
    return f"frame{k:06d}.jpg"


def flow_v_dir(flow_dir_u: str | Path) -> Path:
    """A clip's v folder from its u folder: the release keeps them as <flow>/u/<clip> and <flow>/v/<clip>."""
    flow_dir_u = Path(flow_dir_u)
    if flow_dir_u.parent.name != "u":
        raise ValueError(f"{flow_dir_u}: not a clip folder under a flow release's u/ folder")
    return flow_dir_u.parent.parent / "v" / flow_dir_u.name


def read_flow_frames(flow_dir_u: str | Path, flow_dir_v: str | Path, indices: list[int], size: int) -> np.ndarray:
    """Released flow JPEGs of the given 1-based flow frames -> (len(indices), 2, size, size) uint8 (u, v),
    each resized with PIL's bilinear filter as BalanceBenchmark's torchvision Resize((224, 224)) does."""
    out = np.empty((len(indices), 2, size, size), dtype=np.uint8)
    for i, k in enumerate(indices):
        if k < 1:
            raise ValueError(f"flow frame numbers start at 1 (frame000001.jpg), got {k}")
        for c, folder in enumerate((flow_dir_u, flow_dir_v)):
            path = Path(folder) / flow_frame_name(k)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: flow frame {k} not found")
            with Image.open(path) as image:
                out[i, c] = np.asarray(image.convert("L").resize((size, size), Image.BILINEAR))
    return out


def segment_flow_indices(n_flow: int, segments: int = 3, rng: np.random.Generator | None = None) -> list[int]:
    """BalanceBenchmark's flow frames (1-based) for a clip with n_flow flow frames: one per segment, the
    fixed test-time choice, or with `rng` the training-time random choice within each segment."""
    if n_flow < segments:
        raise ValueError(f"{n_flow} flow frames cannot fill {segments} segments")
    seg = n_flow // segments
    if rng is None:
        return [i * seg + max(seg // 2, 1) for i in range(segments)]
    return [int(rng.integers(i * seg + 1, i * seg + seg + 1)) for i in range(segments)]
