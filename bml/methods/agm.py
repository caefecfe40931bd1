"""AGM: adaptive gradient modulation.

Li, Li, Hu, Lei, Li & Zhou, "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation",
ICCV 2023. The formulas follow the authors' code, lihong2303/AGM_ICCV2023 at 5a65542 ("the code" below;
docs/methods.md), its CREMA-D script run/CREMAD_main.py and model model/CREMAD_net.py:

- per-modality outputs by the two-player Shapley value over zeroed inputs (CREMAD_net.py GradMod.forward,
  lines 57-72, and Modality_Audio / Modality_Visual, lines 7-17): with o the fused output, o_{-a} the output
  with the audio input zeroed and o_{-v} with the visual one zeroed, o_a = (o - o_{-a} + o_{-v}) / 2 and
  o_v = (o - o_{-v} + o_{-a}) / 2, so o_a + o_v = o. The zeroed passes run in eval mode (BatchNorm on its
  running statistics) but with gradients (`zeroed_pass_gradients: true`; BalanceBenchmark's AGM_trainer.py
  runs them under no_grad: `false`, its protocol's setting); the loss is CE(o_a + o_v) (CREMAD_main.py line 69).
  With gradients, k_a != k_v sends (k_v - k_a) / 2 of the fused gradient through each eval-mode pass, whose
  outputs grow large while the running statistics lag: on the embedded protocol (lr 0.05) that run diverged
  (params/methods/agm.yaml says what was measured);
- scores (lines 130-143): s_m = batch mean of -log softmax(o_m)[y], a probability below 1e-8 counted as 1e-8;
- ratios (lines 145-149): r_m = exp(s_other - s_m) from the batch, r*_m the same from the running scores
  (the cumulative mean of s_m over every step of the run so far, lines 154-155, updated after the
  coefficient); k_m = exp(alpha * min(r*_m - r_m, clamp)), clamp 10 (line 151-152). For M modalities the
  code's other scripts write r_m = exp(M / (M - 1) * (mean_j s_j - s_m)), which is this for M = 2;
- k_m multiplies the gradient flowing into o_m (a full backward hook on an identity module after o_m,
  CREMAD_net.py lines 42-51: here a tensor hook, the same product), inside
  `modulation_starts <= epoch <= modulation_ends` (lines 159-166);
- after backward (lines 233-238): when any entry of the fusion head's output-layer weight gradient leaves
  [-1, 1], every gradient of the model is clipped to total norm 1; the code does this on every step of an AGM
  run, inside the window or not. `clip_norm` is both the bound and the norm (1 in the code; BalanceBenchmark's
  AGM_trainer.py uses 5 for both);
- SGD momentum 0.9, weight decay 1e-4, StepLR(70, 0.1) (tasks/CREMAD_task.py lines 35-38).

Where bml differs from the code, and why:
- the code's epochs count from 1 (run/CREMAD_main.py line 635: range(1, EPOCHS + 1)); bml's from 0, so the
  window's numbers in params/methods/agm.yaml are 0-based (the code's 1-based window 0-20 is 0-19);
- outside the window k = 1: the code leaves the model's scale at the last coefficient it set (update_scale is
  called only inside the window), so after the window ends every step keeps the last step's coefficients,
  an accident of where the call sits, not a rule the paper states;
- the code's fourth pass (both inputs zeroed, GradMod.forward line 64) is never read: not run here;
- the scores use log_softmax (the code takes the log of softmax), floored at log(1e-8): the same value where
  the code's is finite.

Epoch numbers scale with the protocol's length (bml/methods/base.py: scale_epoch). Works with every fusion
head (the Shapley outputs need only the fused output of zeroed inputs; the clipping rule reads the head's
output layer: `fc` of concat, the per-modality `fc` of sum, `fc_out` of FiLM and gated) on two modalities.
The evaluation's per-modality accuracies (acc_<m>) read o_a and o_v, as the code's test() does.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods import MethodSpec
from bml.methods.base import Batch, Method, RunContext, StepContext, scale_epoch, two_modalities
from bml.models.model import Output

FLOOR = math.log(1e-8)  # the code counts a probability below 1e-8 as 1e-8


def shapley_outputs(
    full: torch.Tensor, without_a: torch.Tensor, without_v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o_a, o_v) from the fused output and the outputs with audio (without_a) or visual (without_v) zeroed."""
    return 0.5 * (full - without_a + without_v), 0.5 * (full - without_v + without_a)


def agm_score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Batch mean of -log softmax(logits)[y], a probability below 1e-8 counted as 1e-8."""
    log_p = F.log_softmax(logits.detach().float(), dim=1).gather(1, labels[:, None]).squeeze(1)
    return -log_p.clamp_min(FLOOR).mean().item()


def agm_ratios(scores: dict[str, float]) -> dict[str, float]:
    """r_m = exp(M / (M - 1) * (mean_j s_j - s_m)); for two modalities exp(s_other - s_m)."""
    n = len(scores)
    mean = sum(scores.values()) / n
    return {m: math.exp(n / (n - 1) * (mean - s)) for m, s in scores.items()}


def agm_coefficients(
    scores: dict[str, float], running: dict[str, float], alpha: float, clamp: float
) -> dict[str, float]:
    """k_m = exp(alpha * min(r*_m - r_m, clamp)): r from the batch's scores, r* from the running ones. A modality
    doing better in this batch than its running record (r_m > r*_m) is slowed (k < 1), one doing worse sped up."""
    now, usual = agm_ratios(scores), agm_ratios(running)
    return {m: math.exp(alpha * min(usual[m] - now[m], clamp)) for m in scores}


def running_mean(previous: float, value: float, steps: int) -> float:
    """The cumulative mean after `steps` values (steps >= 1), as the code updates it every step."""
    return previous * (steps - 1) / steps + value / steps


def head_output_weights(fusion: nn.Module) -> list[torch.Tensor]:
    """The weights of a fusion head's output layer(s): what the code's clipping rule reads."""
    if hasattr(fusion, "fc_out"):  # FiLM, gated
        return [fusion.fc_out.weight]
    if isinstance(fusion.fc, nn.Linear):  # concat
        return [fusion.fc.weight]
    return [fc.weight for fc in fusion.fc.values()]  # sum: one Linear per modality


def clip_if_head_gradient_large(model: nn.Module, max_norm: float) -> bool:
    """The code's rule: a head output-layer gradient entry outside [-max_norm, max_norm] clips every gradient of
    the model to total norm `max_norm`. Returns whether it clipped."""
    grads = [w.grad for w in head_output_weights(model.fusion) if w.grad is not None]
    if not grads or not any(bool((g.abs() > max_norm).any()) for g in grads):
        return False
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
    return True


def zeroed(inputs: dict[str, torch.Tensor], modality: str) -> dict[str, torch.Tensor]:
    return {m: torch.zeros_like(x) if m == modality else x for m, x in inputs.items()}


class AGM(Method):
    """AGM (ICCV 2023): scale the gradient into each modality's Shapley output by how far its lead is from usual."""

    def __init__(self, spec: MethodSpec, params: dict, run: RunContext) -> None:
        super().__init__(spec, params, run)
        p = self.params
        self.starts = scale_epoch(p["modulation_starts"], run.epochs, p["reference_epochs"])
        self.ends = scale_epoch(p["modulation_ends"], run.epochs, p["reference_epochs"])
        self.running = {m: 0.0 for m in run.modalities}  # the code starts its running scores at 0
        self.steps = 0  # steps seen so far in the run (the code's `iteration`)

    def active(self, epoch: int) -> bool:
        return self.starts <= epoch <= self.ends

    def zeroed_passes(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{m: fused output with modality m zeroed}, in eval mode (the code's), with gradients."""
        was_training = model.training
        model.eval()
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.params["zeroed_pass_gradients"]):
                return {m: model(zeroed(inputs, m)).logits for m in model.modalities}
        finally:
            model.train(was_training)

    def on_features(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> Output:
        a, v = two_modalities(self.run, self.spec.title)
        without = self.zeroed_passes(model, batch.inputs)
        o_a, o_v = shapley_outputs(out.logits, without[a], without[v])
        y = batch.labels
        scores = {a: agm_score(o_a, y), v: agm_score(o_v, y)}
        k = agm_coefficients(scores, self.running, self.params["alpha"], self.params["clamp"])
        self.steps += 1
        self.running = {m: running_mean(self.running[m], scores[m], self.steps) for m in (a, v)}
        on = self.active(ctx.epoch)
        if on and torch.is_grad_enabled():
            o_a.register_hook(lambda g, c=k[a]: g * c)
            o_v.register_hook(lambda g, c=k[v]: g * c)
        for m in (a, v):
            self.record(f"agm_coef_{m}", k[m] if on else 1.0)
            self.record(f"agm_score_{m}", scores[m])
        return replace(out, logits=o_a + o_v, unimodal={a: o_a, v: o_v})

    def after_backward(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> None:
        # under fp16 the gradients here are the GradScaler's scaled ones (unscaled at the optimizer step): the
        # bound and the norm scale with them, so the rule acts on the true gradients exactly
        scaler = ctx.services.scaler
        bound = self.params["clip_norm"] * (scaler.get_scale() if scaler is not None else 1.0)
        self.record("clipped_steps", float(clip_if_head_gradient_large(model, bound)))

    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Output:
        """The fused output, with o_a and o_v as each modality's logits (what acc_<m> reads)."""
        a, v = two_modalities(self.run, self.spec.title)
        out = model(inputs)
        without = {m: model(zeroed(inputs, m)).logits for m in (a, v)}
        o_a, o_v = shapley_outputs(out.logits, without[a], without[v])
        return replace(out, unimodal={a: o_a, v: o_v})

    def state_dict(self) -> dict:
        return {"running": dict(self.running), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.running = dict(state.get("running", self.running))
        self.steps = state.get("steps", 0)
