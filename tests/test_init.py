"""`train.init`: OGM-GE's weight_init per layer type (statistics of a ResNet-18 audio-visual model), `default`
leaving a model exactly as built, the protocols whose authors apply it, the hash that keeps old cells', and the
loop initialising the model a run trains."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PARAMS, cell_config
from test_protocols import PROTOCOLS, cell

from bml.config import ConfigError, read_yaml
from bml.job import start_job
from bml.models.init import initialise
from bml.models.model import ModelSpec, build_model

AV = {"audio": "audio", "visual": "frames"}
# the protocols whose authors' code applies weight_init: OGM-GE main.py line 239, BML_TPAMI2024 main.py line 263;
# those whose code keeps its ResNet-18's own init (models/backbone.py); embedded: bml's own, PyTorch's
INIT_OF = {"ogm_cvpr22": "ogm_ge", "tpami24_cremad": "ogm_ge", "tpami24_ks": "ogm_ge", "embedded": "default"}
INIT_OF |= dict.fromkeys(("mmpareto_icml24", "relearning_eccv24", "valuation_cvpr24", "crmt_iclr24"), "gewu_backbone")
INIT_OF |= {"balancebench": "gewu_backbone"}


def resnet_model(init: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ModelSpec("resnet18", "concat", 31, AV))
    initialise(model, init)
    return model


def layers(model: torch.nn.Module, kind: type) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]


def test_ogm_ge_init_by_layer_type():
    model = resnet_model("ogm_ge")
    convs = layers(model, torch.nn.Conv2d)
    assert len(convs) == 2 * 20  # ResNet-18's 20 convolutions per encoder
    for name, conv in convs:  # kaiming normal, fan-out, ReLU gain: std sqrt(2 / (out_channels * k * k))
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        w = conv.weight.detach()
        assert w.mean().abs().item() < 0.1 * math.sqrt(2.0 / fan_out), name
        assert w.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1), name
    (name, head), *_ = layers(model, torch.nn.Linear)  # the concat head: xavier normal, zero bias
    assert name == "fusion.fc"
    assert torch.count_nonzero(head.bias).item() == 0
    fan_in, fan_out = head.in_features, head.out_features
    assert head.weight.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.1)
    for name, bn in layers(model, torch.nn.BatchNorm2d):
        assert torch.all(bn.weight == 1.0) and torch.all(bn.bias == 0.0), name


def test_the_audio_encoders_replaced_first_convolution_changes_only_under_ogm_ge():
    # PyTorch's default for a Conv2d is kaiming uniform with a = sqrt(5): std 1 / sqrt(3 fan_in); torchvision's
    # own init covers the ResNet's convolutions, not the 1-channel one bml puts in their place
    conv = {init: resnet_model(init).encoders["audio"].trunk[0] for init in ("default", "ogm_ge")}
    fan_in, fan_out = 1 * 7 * 7, 64 * 7 * 7
    assert conv["default"].weight.std().item() == pytest.approx(1.0 / math.sqrt(3.0 * fan_in), rel=0.1)
    assert conv["ogm_ge"].weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1)
    head = resnet_model("default").fusion.fc
    assert torch.count_nonzero(head.bias).item() == head.out_features  # PyTorch's uniform bias, not zero


def test_gewu_backbone_init_by_layer_type():
    model, built = resnet_model("gewu_backbone"), resnet_model("default")
    for name, conv in layers(model, torch.nn.Conv2d):  # kaiming normal, fan-out, the audio's first one too
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1), name
    gammas = torch.cat([bn.weight.detach() for _, bn in layers(model, torch.nn.BatchNorm2d)])
    assert gammas.mean().item() == pytest.approx(1.0, abs=0.005)
    assert gammas.std().item() == pytest.approx(0.02, rel=0.1)
    assert all(torch.all(bn.bias == 0.0) for _, bn in layers(model, torch.nn.BatchNorm2d))
    # Linear layers keep PyTorch's init: the same draw as the default model's, built from the same seed
    (_, head), (_, head_built) = layers(model, torch.nn.Linear)[0], layers(built, torch.nn.Linear)[0]
    assert torch.equal(head.weight, head_built.weight) and torch.equal(head.bias, head_built.bias)


def test_default_leaves_the_model_as_built_and_draws_no_random_numbers():
    torch.manual_seed(0)
    built = build_model(ModelSpec("small_cnn", "concat", 10, AV))
    state = torch.get_rng_state()
    expected = {k: v.clone() for k, v in built.state_dict().items()}
    initialise(built, "default")
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, expected[k]) for k, v in built.state_dict().items())
    with pytest.raises(ValueError, match="train.init: 'he' is not a known initialisation"):
        initialise(built, "he")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_protocols_whose_authors_apply_weight_init_name_it(protocol):
    dataset = next(iter(read_yaml(PARAMS / "protocols" / f"{protocol}.yaml")["datasets"]))
    config = cell(protocol, dataset, "joint")
    assert config["train"]["init"] == INIT_OF[protocol]


def test_the_hash_keeps_old_cells_at_the_default_and_changes_with_ogm_ge():
    base = cell("embedded", "avdigits", "joint")
    assert base["train"]["init"] == "default"  # filled in, so --set train.init works on every protocol
    assert cell("embedded", "avdigits", "joint", sets=("train.init=default",))["hash"] == base["hash"]
    assert cell("embedded", "avdigits", "joint", sets=("train.init=ogm_ge",))["hash"] != base["hash"]
    named = cell("ogm_cvpr22", "cremad", "joint")
    assert cell("ogm_cvpr22", "cremad", "joint", sets=("train.init=default",))["hash"] != named["hash"]
    with pytest.raises(ConfigError, match=r"key 'init': 'he' is not one of \['default', 'ogm_ge', 'gewu_backbone'\]"):
        cell("embedded", "avdigits", "joint", sets=("train.init=he",))


def test_the_loop_initialises_the_model_it_trains(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "joint", "concat", epochs=1, sets=("train.init=ogm_ge",))
    head = start_job(config, "cpu").model.fusion.fc
    assert torch.count_nonzero(head.bias).item() == 0
    fan_in, fan_out = head.in_features, head.out_features
    assert head.weight.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.15)
