"""Greedy: balanced multi-modal learning by conditional learning speed, on two branches joined by MMTM blocks.

Wu, Jastrzębski, Cho & Geras, "Characterizing and Overcoming the Greedy Nature of Learning in Multi-modal
Deep Neural Networks", ICML 2022 (PMLR 162). Authors' code: nyukat/greedy_multimodal_learning (commit
cf28c4c): src/model.py (MMTM_MVCNN), src/balanced_mmtm.py (MMTM_mitigate), src/callbacks.py
(Bias_Mitigation_Strong), train.py (blend_loss, acc), configs/training_guided.gin. docs/methods.md ("Greedy").

The model (src/model.py): one uni-modal network per modality, each with its own linear head; MMTM blocks
(multimodal transfer modules) join the two after their later stages (after ResNet-18's layer2, layer3 and
layer4: `blocks: 3`). An MMTM block squeezes each modality's feature map to a channel vector (spatial mean),
concatenates the two, Linear to int(2 (C_0 + C_1) / ratio) (ratio 4) and ReLU (shared), then one Linear per
modality back to its channels, sigmoid: each map is multiplied channel-wise by its scale. The prediction is the
mean of the two heads' logits; the loss is the sum of the two heads' cross-entropies (train.py blend_loss).

Conditional learning speed (callbacks.py compute_BDR), after each backward: for each modality m,
  bypass_m = the MMTM parameters of m's excitation plus the shared squeeze layer,
  main_m = m's own network (encoder and head);
  M_b,m += |grad(bypass_m)|^2 / |bypass_m|^2, M_n,m += |grad(main_m)|^2 / |main_m|^2 (cumulative over the run),
  BDR_m = log10(M_b,m / M_n,m); d = BDR_0 - BDR_1.
The algorithm (Bias_Mitigation_Strong.on_backward_end): after a warm-up (`starting_epoch=2` of 1-based epochs:
one epoch), when |d| > epsilon (0.01) the next `window` (5) steps are re-balancing steps for modality c
(c = 0 if d > 0, else 1): in them, the MMTM scales of modality c are replaced by their running average, so
branch c gets no information from the other modality and must learn from its own; M is not updated during
them. The optimizer still steps on the whole loss.

Conditional utilisation rate (the paper's diagnostic): u(m_other | m) = (A_m - A_m^alone) / A_m, A_m the
accuracy of branch m, A_m^alone the same with the other modality's squeeze in every MMTM block replaced by its
mean (balanced_mmtm.py `turnoff_cross_modal_flow`). With `utilisation: true`, bml measures it on the validation
split after each epoch and logs util_<modality> (u of that modality given the other) and d_util.

Adapted to bml:
- the MMTM blocks sit after the last `blocks` stages of bml's encoders (ResNet-18: stem+layer1, layer2, layer3,
  layer4; small_cnn: its five conv blocks). A video encoder runs per frame: its squeeze is the mean over frames
  and space, its scale is applied to every frame;
- the code's running average of the second modality's scale is computed from the first modality's
  (`running_avg_weight_skeleton = (vis_out.mean(0) + ...)`, a bug that only works when both widths agree): bml
  averages each modality's own scale, and only over training forwards (the code's counter also runs at evaluation);
- the code's mean squeeze for the utilisation rate comes from a separate pass of the trained model over the
  training set; bml keeps a running mean of the squeezes over the training forwards;
- the warm-up is in 0-based epochs (`warmup_epochs: 1` = the code's 1-based starting_epoch 2) and does not scale
  with the protocol (the code's is absolute: one epoch of a run stopped early).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bml.methods.base import Batch, EpochContext, Method, StepContext, two_modalities
from bml.models.encoders import (
    CHANNELS_LAST,
    ResNet18Audio,
    ResNet18Visual,
    SmallAudioCNN,
    SmallVisualCNN,
    _as_image,
    _check_frames,
)
from bml.models.model import ModelSpec, Output


def learning_speed(grad_sq: float, weight_sq: float) -> float:
    """|grad|^2 / |w|^2 of a parameter group (0 for an all-zero group)."""
    return grad_sq / weight_sq if weight_sq > 0 else 0.0


def bdr_difference(m_bypass: tuple[float, float], m_main: tuple[float, float]) -> tuple[float, float, float]:
    """(BDR_0, BDR_1, d = BDR_0 - BDR_1), BDR_m = log10(M_bypass,m / M_main,m); NaN where a sum is still 0."""

    def bdr(b: float, n: float) -> float:
        return math.log10(b / n) if b > 0 and n > 0 else float("nan")

    b0, b1 = bdr(m_bypass[0], m_main[0]), bdr(m_bypass[1], m_main[1])
    return b0, b1, b0 - b1


def decide(rebalancing: bool, step: int, d: float, epsilon: float, window: int) -> tuple[bool, int | None, int]:
    """One step of Bias_Mitigation_Strong after its warm-up: (re-balancing next, modality cared for, steps in it).

    Outside re-balancing: |d| > epsilon starts `window` re-balancing steps for modality 0 if d > 0 else 1.
    Inside: count the step; the window closes after `window` steps."""
    if not rebalancing:
        if math.isfinite(d) and abs(d) > epsilon:
            return True, 0 if d > 0 else 1, 0
        return False, None, 0
    step += 1
    return (step < window), None, step


def utilisation_rate(acc_with: float, acc_alone: float) -> float:
    """u = (A - A_alone) / A; 0 where A is 0."""
    return (acc_with - acc_alone) / acc_with if acc_with > 0 else 0.0


class MMTM(nn.Module):
    """One multimodal transfer module between two maps: squeezes (B, C_0), (B, C_1) -> scales in (0, 1)."""

    def __init__(self, channels: tuple[int, int], ratio: float) -> None:
        super().__init__()
        hidden = int(2 * sum(channels) / ratio)
        self.squeeze = nn.Linear(sum(channels), hidden)
        self.excite = nn.ModuleList([nn.Linear(hidden, c) for c in channels])
        for i, c in enumerate(channels):  # running means over training forwards (kept in checkpoints)
            self.register_buffer(f"scale_mean_{i}", torch.zeros(c))
            self.register_buffer(f"squeeze_mean_{i}", torch.zeros(c))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(
        self, squeezes: list[torch.Tensor], cared: int | None = None, flow_off: bool = False
    ) -> list[torch.Tensor]:
        if flow_off:  # each modality's scale from its own squeeze and the other's mean squeeze
            means = [getattr(self, f"squeeze_mean_{i}") for i in range(2)]
            s0 = torch.cat([squeezes[0], means[1].expand(len(squeezes[0]), -1)], 1)
            s1 = torch.cat([means[0].expand(len(squeezes[1]), -1), squeezes[1]], 1)
            scales = [torch.sigmoid(self.excite[0](F.relu(self.squeeze(s0))))]
            scales.append(torch.sigmoid(self.excite[1](F.relu(self.squeeze(s1)))))
            return scales
        h = F.relu(self.squeeze(torch.cat(squeezes, 1)))  # (B, hidden)
        scales = [torch.sigmoid(fc(h)) for fc in self.excite]  # (B, C_i) each
        if self.training:
            n = self.seen.to(scales[0].dtype)  # a tensor: no device sync
            for i in range(2):
                for name, value in ((f"scale_mean_{i}", scales[i]), (f"squeeze_mean_{i}", squeezes[i])):
                    buf = getattr(self, name)
                    buf.copy_((value.detach().mean(0) + buf * n) / (n + 1))
            self.seen += 1
        if cared is not None:  # a re-balancing step: the cared modality's scale is its running mean
            mean = getattr(self, f"scale_mean_{cared}")
            scales[cared] = mean.expand_as(scales[cared])
        return scales


class StagedEncoder:
    """bml's encoder seen stage by stage, for blocks between its stages (no parameters of its own)."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        if isinstance(encoder, (ResNet18Audio, ResNet18Visual)):
            t = encoder.trunk
            self.stages, self.frames = [t[:5], t[5], t[6], t[7]], isinstance(encoder, ResNet18Visual)
        elif isinstance(encoder, (SmallAudioCNN, SmallVisualCNN)):
            self.stages, self.frames = list(encoder.cnn), isinstance(encoder, SmallVisualCNN)
        else:
            raise ValueError(f"Greedy's MMTM blocks need a staged encoder; {type(encoder).__name__} is not one")
        self.channels = [_out_channels(s) for s in self.stages]

    def begin(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The first stage's input and T (frames per sample; 1 for a spectrogram)."""
        if not self.frames:
            return _as_image(x), 1
        _check_frames(x, self.encoder.in_channels)
        T = x.shape[1]
        x = x.flatten(0, 1)  # (B*T, C, H, W)
        size = getattr(self.encoder, "frame_size", None)
        if size is not None and x.shape[-2:] != (size, size):
            x = F.adaptive_avg_pool2d(x, size)
        return x.contiguous(memory_format=CHANNELS_LAST), T

    @staticmethod
    def squeeze(x: torch.Tensor, T: int) -> torch.Tensor:
        """(B*T, C, h, w) -> (B, C): the mean over frames and space."""
        return x.reshape(-1, T, *x.shape[1:]).mean(dim=(1, 3, 4))

    @staticmethod
    def excite(x: torch.Tensor, scale: torch.Tensor, T: int) -> torch.Tensor:
        return x * scale.repeat_interleave(T, 0)[:, :, None, None]  # every frame of a sample scaled alike

    @staticmethod
    def pool(x: torch.Tensor, T: int) -> torch.Tensor:
        return StagedEncoder.squeeze(x, T)  # the encoders' own global average pooling: (B, C)


def _out_channels(stage: nn.Module) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


class MMTMModel(nn.Module):
    """Two encoders joined by MMTM blocks after their last `blocks` stages, a linear head each; logits: their mean."""

    def __init__(self, encoders: dict[str, nn.Module], n_classes: int, blocks: int, ratio: float) -> None:
        super().__init__()
        self.n_classes, self.modalities = n_classes, tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        staged = [StagedEncoder(e) for e in encoders.values()]
        n_stages = {len(s.stages) for s in staged}
        if len(n_stages) != 1 or blocks > min(n_stages):
            raise ValueError(f"MMTM blocks: {blocks} after stages of encoders with {sorted(n_stages)} stages")
        (n,) = n_stages
        self.first_block = n - blocks  # stage index after which the first block sits
        self.mmtm = nn.ModuleList(
            MMTM((staged[0].channels[i], staged[1].channels[i]), ratio) for i in range(self.first_block, n)
        )
        self.heads = nn.ModuleDict({m: nn.Linear(e.out_dim, n_classes) for m, e in encoders.items()})
        self.cared: int | None = None  # set by the method before a re-balancing step's forward (training only)
        self.flow_off = False  # set for the utilisation rate's evaluation

    def forward(self, inputs: dict[str, torch.Tensor]) -> Output:
        staged = [StagedEncoder(e) for e in self.encoders.values()]
        x, T = zip(*(s.begin(inputs[m]) for s, m in zip(staged, self.modalities, strict=True)), strict=True)
        x = list(x)
        cared = self.cared if self.training else None
        for i in range(len(staged[0].stages)):
            x = [s.stages[i](xi) for s, xi in zip(staged, x, strict=True)]
            if i >= self.first_block:
                block = self.mmtm[i - self.first_block]
                scales = block([StagedEncoder.squeeze(xi, t) for xi, t in zip(x, T, strict=True)], cared, self.flow_off)
                x = [StagedEncoder.excite(xi, s, t) for xi, s, t in zip(x, scales, T, strict=True)]
        features = {m: StagedEncoder.pool(xi, t) for m, xi, t in zip(self.modalities, x, T, strict=True)}  # (B, D)
        logits = {m: self.heads[m](f) for m, f in features.items()}  # (B, C) each
        return Output(sum(logits.values()) / len(logits), features, logits)


class Greedy(Method):
    """Balanced multi-modal learning (ICML 2022): re-balancing steps on the modality that learns slower
    from its own input, chosen by the conditional learning speed."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        two_modalities(self.run, self.spec.title)
        self.m_bypass, self.m_main = [0.0, 0.0], [0.0, 0.0]
        self.rebalancing, self.cared, self.window_step = False, None, 0

    def build_model(self, spec: ModelSpec) -> nn.Module:
        from bml.models.encoders import build_encoder

        encoders = {m: build_encoder(spec.encoder, kind) for m, kind in spec.modalities.items()}
        return MMTMModel(encoders, spec.n_classes, self.params["blocks"], self.params["ratio"])

    def before_forward(self, batch: Batch, ctx: StepContext) -> Batch:
        ctx.model.cared = self.cared if self.rebalancing else None
        for i, m in enumerate(ctx.model.modalities):  # the share of steps that re-balance each modality
            self.record(f"rebalance_{m}", float(self.rebalancing and self.cared == i))
        return batch

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        return {m: F.cross_entropy(z, batch.labels) for m, z in out.unimodal.items()}  # blend_loss: the sum

    def speeds(self, model: MMTMModel) -> tuple[list[float], list[float]]:
        """This step's |grad|^2 / |w|^2 of each modality's bypass (MMTM) and main (encoder + head) parameters."""
        shared = list(model.mmtm.named_parameters())
        sums = []  # per modality: |grad|^2 and |w|^2 of bypass, then of main; one device sync for all of them
        for i, m in enumerate(model.modalities):
            own = [p for n, p in shared if n.split(".")[1] == "squeeze" or n.split(".")[1:3] == ["excite", str(i)]]
            mains = [*model.encoders[m].parameters(), *model.heads[m].parameters()]
            for group in (own, mains):
                zero = group[0].new_zeros((), dtype=torch.float64)
                sums.append(sum(((p.grad.detach().double() ** 2).sum() for p in group if p.grad is not None), zero))
                sums.append(sum((p.detach().double() ** 2).sum() for p in group))
        v = torch.stack(sums).tolist()  # [g_b0, w_b0, g_n0, w_n0, g_b1, w_b1, g_n1, w_n1]
        bypass = [learning_speed(v[0], v[1]), learning_speed(v[4], v[5])]
        main = [learning_speed(v[2], v[3]), learning_speed(v[6], v[7])]
        return bypass, main

    def after_backward(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> None:
        if self.rebalancing:  # inside a window: M is not updated (callbacks.py)
            self.rebalancing, _, self.window_step = decide(True, self.window_step, 0.0, 0.0, self.params["window"])
            if not self.rebalancing:
                self.cared = None
            return
        bypass, main = self.speeds(model)
        for i in range(2):
            self.m_bypass[i] += bypass[i]
            self.m_main[i] += main[i]
        b0, b1, d = bdr_difference(tuple(self.m_bypass), tuple(self.m_main))
        a, v = model.modalities
        for name, value in ((f"bdr_{a}", b0), (f"bdr_{v}", b1), ("d_bdr", d)):
            if math.isfinite(value):
                self.record(name, value)
        if ctx.epoch >= self.params["warmup_epochs"]:
            self.rebalancing, self.cared, self.window_step = decide(
                False, 0, d, self.params["epsilon"], self.params["window"]
            )

    def on_epoch_end(self, ctx: EpochContext) -> None:
        if not self.params["utilisation"] or ctx.run.collect is None:
            return
        model = ctx.model
        with_flow = ctx.run.collect(model, "val")
        model.flow_off = True
        try:
            alone = ctx.run.collect(model, "val")
        finally:
            model.flow_off = False
        model.train()
        y = with_flow["label"]
        rates = {}
        for i, m in enumerate(model.modalities):
            other = model.modalities[1 - i]
            acc = float(np.mean(with_flow["unimodal"][other].argmax(1) == y))
            acc_alone = float(np.mean(alone["unimodal"][other].argmax(1) == y))
            rates[m] = utilisation_rate(acc, acc_alone)  # u(m | other): the other branch's gain from m
            self.record(f"util_{m}", rates[m])
        a, v = model.modalities
        self.record("d_util", rates[a] - rates[v])

    def state_dict(self) -> dict:
        return {
            "m_bypass": list(self.m_bypass),
            "m_main": list(self.m_main),
            "rebalancing": self.rebalancing,
            "cared": self.cared,
            "window_step": self.window_step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.m_bypass, self.m_main = list(state["m_bypass"]), list(state["m_main"])
        self.rebalancing, self.cared, self.window_step = state["rebalancing"], state["cared"], state["window_step"]
