"""Uni-modal encoders: one per modality kind (bml/catalog.py): a spectrogram, a few RGB frames, or a few
optical-flow frames, to one feature vector.

Two pairs:
- `ResNet18Audio` / `ResNet18Visual`: the encoders of OGM-GE (Peng et al., "Balanced Multimodal Learning
  via On-the-fly Gradient Modulation", CVPR 2022) and its public code, used by most BML papers since:
  a torchvision ResNet-18 trained from scratch; the audio one reads the spectrogram as a 1-channel image,
  the visual one runs every frame through a 2-D trunk and average-pools the maps over time and space.
- `SmallAudioCNN` / `SmallVisualCNN`: a CPU-sized pair for the embedded avdigits data (64 x 50
  spectrograms, (T, 3, 64, 64) frames), as calibrated on a prototype (docs/methods.md, "The embedded
  dataset's settings"): widths 8 -> 128,
  frames pooled to 32 x 32 first, a per-frame CNN averaged over frames.

Every encoder maps a batch to (B, out_dim) and has an attribute `out_dim`. A flow encoder is the frame
encoder with 2 input channels (u, v), as two-stream networks read flow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bml.catalog import ENCODERS as ENCODER_FAMILIES
from bml.kinds import KINDS

# Convolutions run on channels-last tensors: on the CPU, max-pooling and BatchNorm take half the time in that
# layout (benchmarks/results/timings.md, "Channels-last convolutions"), and GPUs favour it too.
CHANNELS_LAST = torch.channels_last


def _as_image(spec: torch.Tensor) -> torch.Tensor:
    """A spectrogram batch (B, F, T) or (B, 1, F, T) as a 1-channel image batch (B, 1, F, T)."""
    if spec.dim() == 3:
        return spec.unsqueeze(1).contiguous(memory_format=CHANNELS_LAST)
    if spec.dim() == 4 and spec.shape[1] == 1:
        return spec.contiguous(memory_format=CHANNELS_LAST)
    raise ValueError(f"expected a spectrogram of shape (B, F, T) or (B, 1, F, T), got {tuple(spec.shape)}")


def _check_frames(frames: torch.Tensor, channels: int) -> None:
    if frames.dim() != 5 or frames.shape[2] != channels:
        raise ValueError(f"expected frames of shape (B, T, {channels}, H, W), got {tuple(frames.shape)}")


def _resnet18_trunk(in_channels: int) -> nn.Sequential:
    """torchvision's ResNet-18 from scratch, without avgpool and fc: (N, in_channels, H, W) -> (N, 512, h, w)."""
    from torchvision.models import resnet18  # imported here: it is slow (benchmarks/results/timings.md)

    net = resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return trunk.to(memory_format=CHANNELS_LAST)


class ResNet18Audio(nn.Module):
    """ResNet-18 on the spectrogram as a 1-channel image, global average pooled to (B, 512)."""

    out_dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.trunk = _resnet18_trunk(in_channels=1)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.trunk(_as_image(spec))  # (B, 512, f, t)
        return x.mean(dim=(2, 3))  # (B, 512)


class ResNet18Visual(nn.Module):
    """ResNet-18 on each frame (RGB, or the 2 channels of optical flow), average-pooled over (T, h, w) to
    (B, 512), as in OGM-GE's code."""

    out_dim = 512

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.trunk = _resnet18_trunk(in_channels=in_channels)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        _check_frames(frames, self.in_channels)
        B, T = frames.shape[:2]
        x = self.trunk(frames.flatten(0, 1).contiguous(memory_format=CHANNELS_LAST))  # (B*T, 512, h, w)
        x = x.reshape(B, T, *x.shape[1:])  # (B, T, 512, h, w)
        return x.mean(dim=(1, 3, 4))  # (B, 512)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU, then 2x2 max-pool: halves height and width."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
    )


def small_cnn(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """A stack of conv blocks, in_channels -> widths[0] -> ... -> widths[-1]."""
    chans = (in_channels, *widths)
    blocks = nn.Sequential(*(conv_block(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)))
    return blocks.to(memory_format=CHANNELS_LAST)


class SmallAudioCNN(nn.Module):
    """A 2-D CNN on the (64 x 50) spectrogram: widths 8 -> out_dim, global average pooled to (B, out_dim)."""

    def __init__(self, out_dim: int = 128, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.cnn = small_cnn(1, (*widths, out_dim))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.cnn(_as_image(spec))  # (B, out_dim, f, t), (2, 2) for 64 x 50
        return x.mean(dim=(2, 3))  # (B, out_dim)


class SmallVisualCNN(nn.Module):
    """A per-frame 2-D CNN on frames pooled to frame_size x frame_size, averaged over frames to (B, out_dim)."""

    def __init__(
        self, out_dim: int = 128, widths: tuple[int, ...] = (8, 16, 32, 64), frame_size: int = 32, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.frame_size = frame_size
        self.in_channels = in_channels
        self.cnn = small_cnn(in_channels, (*widths, out_dim))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        _check_frames(frames, self.in_channels)
        B, T = frames.shape[:2]
        x = frames.flatten(0, 1)  # (B*T, C, H, W)
        if x.shape[-2:] != (self.frame_size, self.frame_size):
            x = F.adaptive_avg_pool2d(x, self.frame_size)  # (B*T, C, 32, 32)
        x = self.cnn(x.contiguous(memory_format=CHANNELS_LAST))  # (B*T, out_dim, 1, 1) for 32 x 32
        x = x.reshape(B, T, self.out_dim, *x.shape[2:])  # (B, T, out_dim, h, w)
        return x.mean(dim=(1, 3, 4))  # (B, out_dim)


def _builder(family: str, kind: str) -> Callable[[], nn.Module]:
    return lambda: KINDS[kind].encoder(family)


# (family, modality kind) -> a builder of the encoder; each kind (bml/kinds/) names its class per family
ENCODERS: dict[tuple[str, str], Callable[[], nn.Module]] = {
    (family, kind): _builder(family, kind) for family in ENCODER_FAMILIES for kind in KINDS
}


def build_encoder(family: str, kind: str) -> nn.Module:
    """The encoder of one modality kind in encoder family `family` (the protocol's `encoder`)."""
    if (family, kind) not in ENCODERS:
        raise ValueError(f"no {family!r} encoder for modality kind {kind!r}; there are {sorted(ENCODERS)}")
    return ENCODERS[(family, kind)]()
