"""Optical flow (bml/data/flow.py): Farneback on frames with a known motion, the releases' JPEG quantisation,
reading a release-style flow tree, and BalanceBenchmark's per-segment flow frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bml.data.flow import (
    FLOW_BOUND,
    dequantise_flow,
    farneback_flow,
    flow_frame_name,
    flow_v_dir,
    quantise_flow,
    read_flow_frames,
    segment_flow_indices,
)

STEP = 2 * FLOW_BOUND / 255  # one quantisation step in pixels


def moving_square(shifts: list[tuple[int, int]], size: int = 64, side: int = 24) -> tuple[np.ndarray, list]:
    """RGB frames of a textured square on a flat background, moved by shifts[t] between frames t and t+1;
    returns the frames and the square's top-left corner in each frame."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (side, side)).astype(np.float32), (0, 0), 1.5)
    texture = ((texture - texture.min()) / (texture.max() - texture.min()) * 255).astype(np.uint8)
    corners = [(14, 10)]
    for dx, dy in shifts:
        corners.append((corners[-1][0] + dx, corners[-1][1] + dy))
    frames = np.full((len(corners), size, size, 3), 60, np.uint8)
    for t, (x, y) in enumerate(corners):
        frames[t, y : y + side, x : x + side] = texture[..., None]
    return frames, corners


def test_farneback_recovers_a_known_shift():
    shifts = [(3, -2), (3, -2), (-2, 1)]
    frames, corners = moving_square(shifts)
    flow = farneback_flow(frames)
    assert flow.shape == (3, 2, 64, 64) and flow.dtype == np.uint8
    for k, ((dx, dy), (x, y)) in enumerate(zip(shifts, corners[:-1], strict=True)):
        inside = dequantise_flow(flow[k, :, y + 5 : y + 19, x + 5 : x + 19])  # the square, away from its edges
        assert inside[0].mean() == pytest.approx(dx, abs=0.25)
        assert inside[1].mean() == pytest.approx(dy, abs=0.25)
        assert np.abs(dequantise_flow(flow[k, :, 58:, :6])).max() <= STEP  # still background: zero


def test_flow_frame_k_is_the_motion_from_frame_k_to_k_plus_1():
    frames, _ = moving_square([(0, 0), (4, 0), (0, 0)])  # only frames 2 -> 3 (1-based) move
    means = [dequantise_flow(f[0]).mean() for f in farneback_flow(frames)]
    assert abs(means[0]) <= STEP and abs(means[2]) <= STEP and means[1] > 0.3


def test_quantisation_matches_the_release_mapping_and_round_trips():
    values = np.random.default_rng(1).uniform(-30, 30, 20000)
    stored = quantise_flow(values)
    # The release's CAST macro (gpu_flow compute_flow.cpp), written out per value: clip, then round to nearest.
    release = [255 if v > 20 else 0 if v < -20 else int(np.floor(255 * (v + 20) / 40 + 0.5)) for v in values]
    assert stored.tolist() == release
    inside = np.abs(values) <= FLOW_BOUND
    assert np.abs(dequantise_flow(stored[inside]) - values[inside]).max() <= STEP / 2 + 1e-5
    assert quantise_flow(np.array([-FLOW_BOUND, FLOW_BOUND, -99.0, 99.0])).tolist() == [0, 255, 0, 255]
    assert quantise_flow(np.zeros(1)).tolist() == [128]  # 127.5 rounds to 128: zero reads back as +0.078 px


@pytest.mark.parametrize(
    "frames",
    [np.zeros((3, 8, 8, 3), np.float32), np.zeros((3, 8, 8), np.uint8), np.zeros((1, 8, 8, 3), np.uint8)],
)
def test_farneback_rejects_bad_frames(frames):
    with pytest.raises(ValueError):
        farneback_flow(frames)


def write_release(root, clip: str, flows: np.ndarray):
    """Write (N, 2, H, W) uint8 flow as the release does: <root>/{u,v}/<clip>/frame%06d.jpg from 1."""
    for c, part in enumerate(("u", "v")):
        folder = root / part / clip
        folder.mkdir(parents=True)
        for k, flow in enumerate(flows, start=1):
            assert cv2.imwrite(str(folder / flow_frame_name(k)), flow[c])
    return root / "u" / clip


def test_read_flow_frames_reads_a_release_tree(tmp_path):
    values = np.array([[k, -k / 2] for k in range(1, 6)], np.float32)  # frame k: u = k px, v = -k/2 px
    flows = quantise_flow(np.broadcast_to(values[:, :, None, None], (5, 2, 12, 16)))
    u_dir = write_release(tmp_path / "tvl1_flow", "v_YoYo_g01_c01", flows)
    assert flow_v_dir(u_dir) == tmp_path / "tvl1_flow" / "v" / "v_YoYo_g01_c01"
    out = read_flow_frames(u_dir, flow_v_dir(u_dir), [1, 3, 5], size=8)
    assert out.shape == (3, 2, 8, 8) and out.dtype == np.uint8
    got = dequantise_flow(out).mean(axis=(2, 3))
    assert np.abs(got - values[[0, 2, 4]]).max() <= 2 * STEP  # JPEG of a flat image: within a level or two
    with pytest.raises(FileNotFoundError, match="frame000006.jpg"):
        read_flow_frames(u_dir, flow_v_dir(u_dir), [6], size=8)
    with pytest.raises(ValueError, match="start at 1"):
        read_flow_frames(u_dir, flow_v_dir(u_dir), [0], size=8)
    with pytest.raises(ValueError, match="u/ folder"):
        flow_v_dir(tmp_path / "tvl1_flow" / "v" / "v_YoYo_g01_c01")


def test_computed_flow_written_and_read_back_like_the_release(tmp_path):
    frames, corners = moving_square([(3, 1), (3, 1)])
    u_dir = write_release(tmp_path, "clip", farneback_flow(frames))
    out = dequantise_flow(read_flow_frames(u_dir, flow_v_dir(u_dir), [1, 2], size=64))
    x, y = corners[0]
    assert out[0, 0, y + 5 : y + 19, x + 5 : x + 19].mean() == pytest.approx(3, abs=0.3)
    assert out[0, 1, y + 5 : y + 19, x + 5 : x + 19].mean() == pytest.approx(1, abs=0.3)


def test_segment_flow_indices_follow_balancebenchmark():
    # ucf101_dataset.py: seg = n // 3; test file i*seg + max(seg // 2, 1); train uniform in [i*seg+1, i*seg+seg]
    assert segment_flow_indices(24) == [4, 12, 20]
    assert segment_flow_indices(3) == [1, 2, 3]
    assert segment_flow_indices(10) == [1, 4, 7]
    rng = np.random.default_rng(0)
    draws = np.array([segment_flow_indices(24, rng=rng) for _ in range(300)])
    for i in range(3):
        assert draws[:, i].min() == 8 * i + 1 and draws[:, i].max() == 8 * i + 8
    again = np.random.default_rng(0)
    assert [segment_flow_indices(24, rng=again) for _ in range(300)] == draws.tolist()
    with pytest.raises(ValueError):
        segment_flow_indices(2)
