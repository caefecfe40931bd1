"""The weights' initialisation a protocol names (`train.init`, bml/settings.py INITS).

- `default`: what the modules are built with: PyTorch's defaults, and torchvision's ResNet-18 init inside the
  ResNet encoders (kaiming-normal fan-out convolutions, BatchNorm 1 and 0); the replaced first convolution of
  the 1-channel audio and 2-channel flow trunks and every Linear keep PyTorch's.
- `ogm_ge`: the `weight_init` that OGM-GE's and the TPAMI 2024 code apply to the whole model once built
  (GeWu-Lab/OGM-GE_CVPR2022 utils/utils.py lines 15-23, applied in main.py line 239; GeWu-Lab/BML_TPAMI2024
  code/main.py lines 63-71, applied at line 263): every Conv2d kaiming-normal, fan-out, for ReLU (the audio
  encoder's first convolution too); every Linear xavier-normal with a zero bias; every BatchNorm2d weight 1,
  bias 0.
- `gewu_backbone`: the init the GeWu-Lab ResNet-18 gives itself when built (models/backbone.py lines 104-109 of
  GeWu-Lab/MMPareto_ICML2024 code/, Diagnosing_Relearning_ECCV2024 code/ and Valuate-and-Enhance-Multimodal-
  Cooperation code/; lines 101-106 of Certifiable-Robust-Multi-modal-Training; BalanceBenchmark
  balancemm/encoders/resnet18_encoder.py lines 97-102), which those codes keep (they never apply a
  weight_init): every Conv2d kaiming-normal, fan-out, for ReLU (its 1-channel audio convolution is built inside
  the ResNet, so it too); every BatchNorm2d weight normal(1, 0.02), bias 0; Linear layers keep PyTorch's.
"""

from __future__ import annotations

from torch import nn


def ogm_ge_init(module: nn.Module) -> None:
    """One module's share of OGM-GE's weight_init; other module types keep what they have."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def gewu_backbone_init(module: nn.Module) -> None:
    """One module's share of the GeWu-Lab ResNet-18's own init; other module types keep what they have."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, mean=1.0, std=0.02)
        nn.init.zeros_(module.bias)


SCHEMES = {"ogm_ge": ogm_ge_init, "gewu_backbone": gewu_backbone_init}


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise `model` in place by `scheme`; `default` leaves it as built (and draws no random numbers)."""
    if scheme in SCHEMES:
        model.apply(SCHEMES[scheme])
    elif scheme != "default":
        raise ValueError(f"train.init: {scheme!r} is not a known initialisation")
