"""I2M2: inter- and intra-modality modelling, a product of uni-modal experts and an inter-modal model.

Divyam Madaan, Taro Makino, Sumit Chopra & Kyunghyun Cho, "Jointly Modeling Inter- & Intra-Modality Dependencies
for Multi-modal Learning", NeurIPS 2024 (arXiv 2405.17613). Authors' code: divyam3897/I2M2,
avmnist_and_mimic/ (built on MultiBench); facts and where they are (docs/methods.md, "I2M2"):

- the model: one uni-modal classifier per modality (the intra-modality experts f_m, each with its own encoder)
  and one multimodal classifier (the inter-modality model f_x, encoders of its own and a fusion head).
  Output: s = sum_m log_softmax(f_m(x_m)) + log_softmax(f_x(x)), then s - logsumexp_k(s)
  (training_structures/inter_and_intra_modality.py, train() lines 98-103, validation lines 156-161, the test
  function lines 291-296): a normalised product of experts, the same at train and at test time. Up to a
  per-row constant s is the sum of the parts' logits, so the output is log_softmax(sum of all logits)
  (`product_of_experts`; tests/test_i2m2.py checks both);
- the loss: cross-entropy on that output only (the same file: `objective` nn.CrossEntropyLoss on `out`, line
  118); as `out` is already normalised, that is its negative log-likelihood, which is what bml computes;
- the schedule: the experts and the inter-modal model are first trained alone (avmnist_main.py: model_type
  unimodal, lines 60-66, and inter_modality, lines 36-53, 30 epochs each), then loaded and fine-tuned jointly
  (lines 72-81). In bml those are runs of their own: the `<modality>_only` runs and the `joint` run with this
  cell's fusion, of the same dataset, protocol and seed (the plan's workflow edges: `requires`), each loaded
  from its best-on-validation checkpoint (best.pt), as the authors save the best on validation;
- the fine-tuning: every part's parameters in one optimizer, SGD lr 0.01, weight decay 1e-4
  (avmnist_main.py line 81), the gradient norm over all of them clipped to 8 (inter_and_intra_modality.py:
  clip_val=8, line 24; clip_grad_norm_ over all parameters, line 124). bml takes the lr as this method's `lr`
  (its one parameter group, so the protocol's optimizer, momentum, weight decay and schedule apply around it)
  and the clip as its `grad_clip` (the loop's StepServices clip it, after any AMP unscale).

What bml does not follow: the pre-training runs use the protocol's learning rate, where the authors used 0.01
for the experts and 0.1 for the inter-modal model (avmnist_main.py lines 45, 66): in bml those runs are the
matrix's own baselines, shared with every other method. The authors stop early once more than 10 epochs in a
row bring no better validation accuracy (inter_and_intra_modality.py line 241); bml trains the protocol's
epochs and keeps the best on validation.

Logged per epoch: `expert_ce_<m>`, each expert's own cross-entropy on the training batches (a diagnostic, not
in the loss). Evaluation: `acc_<m>` is each expert's accuracy; the probes measure every encoder, the
inter-modal model's as `probe_<m>` and the experts' as `probe_<m>.unimodal` (bml/catalog.py: encoder_key).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bml.catalog import NO_FUSION, encoder_key
from bml.checkpoint import load_required
from bml.methods import UNIMODAL_SUFFIX
from bml.methods.base import Batch, Method, StepContext, labels_of
from bml.models.model import ModelSpec, Output, UnimodalModel, build_model

EXPERT = "unimodal"  # the experts' encoders: features keyed <modality>.unimodal, probes probe_<modality>.unimodal
INTER = "joint"  # the run that trains the inter-modal model (with the cell's own fusion)


def product_of_experts(logits: list[torch.Tensor]) -> torch.Tensor:
    """log p(y | x) of a normalised product of classifiers: s = sum_i log_softmax(z_i), s - logsumexp(s).
    logits: (B, C) each -> (B, C) log-probabilities."""
    s = sum(torch.log_softmax(z, dim=-1) for z in logits)  # (B, C)
    return s - torch.logsumexp(s, dim=-1, keepdim=True)


class I2M2Model(nn.Module):
    """Uni-modal experts (each a UnimodalModel) and an inter-modal model (a MultimodalModel), combined as a
    product of experts. Output: the product's log-probabilities, the inter-modal model's features keyed by
    modality and the experts' as <modality>.unimodal, each expert's logits as that modality's."""

    def __init__(self, experts: dict[str, UnimodalModel], inter: nn.Module) -> None:
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.inter = inter
        self.modalities = tuple(inter.modalities)
        self.n_classes = inter.n_classes

    def forward(self, inputs: dict[str, torch.Tensor]) -> Output:
        joint = self.inter(inputs)  # logits (B, C), features {m: (B, D_m)}
        own = {m: expert(inputs) for m, expert in self.experts.items()}
        logits = product_of_experts([o.logits for o in own.values()] + [joint.logits])  # (B, C)
        features = dict(joint.features) | {encoder_key(m, EXPERT): o.features[m] for m, o in own.items()}
        return Output(logits, features, {m: o.logits for m, o in own.items()})


def load_trained(folder: Path, model: nn.Module, who: str, seed: int) -> nn.Module:
    """`model` with the weights of the best-on-validation checkpoint in `folder`."""
    model.load_state_dict(load_required(folder, who, "I2M2", seed)["model"])
    return model


class I2M2(Method):
    """The experts and the inter-modal model, loaded from their own runs and fine-tuned jointly on the
    product of experts' negative log-likelihood."""

    def build_model(self, spec: ModelSpec) -> nn.Module:
        experts = {}
        for m, kind in spec.modalities.items():
            expert = build_model(ModelSpec(spec.encoder, NO_FUSION, spec.n_classes, {m: kind}))
            name = f"{m}{UNIMODAL_SUFFIX}"
            experts[m] = load_trained(self.run.required[name], expert, name, self.run.seed)
        inter = build_model(ModelSpec(spec.encoder, spec.fusion, spec.n_classes, dict(spec.modalities)))
        inter = load_trained(self.run.required[INTER], inter, f"{INTER} ({spec.fusion})", self.run.seed)
        return I2M2Model(experts, inter)

    def param_groups(self, model: nn.Module) -> list[dict]:
        # one group at the authors' fine-tuning lr, as their one optimizer over every part
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.params["lr"]}]

    def grad_clip(self, configured: float | None) -> float | None:
        return self.params["grad_clip"]

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        labels = labels_of(out, batch)
        with torch.no_grad():  # each expert's own cross-entropy on the batch: how far apart the parts learn
            for m, z in out.unimodal.items():
                self.record(f"expert_ce_{m}", F.cross_entropy(z.float(), labels).item())
        return {"nll": F.nll_loss(out.logits, labels)}
