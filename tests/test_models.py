"""Encoders, fusion heads and models keyed by modality: shapes, parameter counts, per-modality logits,
refusals, gradients, determinism, and agreement with the torch-free catalog the plan checks names against."""

from __future__ import annotations

import pytest
import torch

from bml.catalog import ENCODERS as ENCODER_FAMILIES
from bml.catalog import FUSIONS, MODALITY_KINDS
from bml.models.encoders import (
    ENCODERS,
    ResNet18Audio,
    ResNet18Visual,
    SmallAudioCNN,
    SmallVisualCNN,
    build_encoder,
)
from bml.models.fusion import HEADS, ConcatFusion, SumFusion, build_fusion
from bml.models.model import (
    LateEnsemble,
    ModelSpec,
    MultimodalModel,
    Output,
    UnimodalModel,
    build_model,
    unimodal_logits,
)

B, C = 2, 10
AV = {"audio": "audio", "visual": "frames"}
AVF = {"audio": "audio", "visual": "frames", "flow": "flow"}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs_for(modalities: dict[str, str], n: int = B) -> dict[str, torch.Tensor]:
    """Random encoder inputs of avdigits' shapes: 64 x 100 spectrograms, 3 frames of 64 x 64."""
    shapes = {"audio": (n, 64, 100), "frames": (n, 3, 3, 64, 64), "flow": (n, 3, 2, 64, 64)}
    return {m: torch.randn(shapes[kind]) for m, kind in modalities.items()}


# ---- encoders ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(B, 64, 64), (B, 1, 64, 64)])
def test_resnet18_audio(shape):
    enc = ResNet18Audio().eval()
    assert enc(torch.randn(shape)).shape == (B, 512) and enc.out_dim == 512
    assert 11.0e6 <= n_params(enc) <= 11.3e6  # torchvision's ResNet-18 without fc: 11.17M, 1-channel conv1


@pytest.mark.parametrize("channels", [3, 2])
def test_resnet18_visual_and_flow(channels):
    enc = ResNet18Visual(in_channels=channels).eval()
    assert enc(torch.randn(B, 2, channels, 64, 64)).shape == (B, 512) and enc.out_dim == 512
    assert 11.0e6 <= n_params(enc) <= 11.3e6


@pytest.mark.parametrize("out_dim", [128, 32])
def test_small_cnns(out_dim):
    audio, visual = SmallAudioCNN(out_dim=out_dim), SmallVisualCNN(out_dim=out_dim)
    flow = SmallVisualCNN(out_dim=out_dim, in_channels=2)
    assert audio(torch.randn(B, 64, 100)).shape == (B, out_dim)
    assert audio(torch.randn(B, 1, 64, 100)).shape == (B, out_dim)
    assert visual(torch.randn(B, 3, 3, 64, 64)).shape == (B, out_dim)
    assert flow(torch.randn(B, 3, 2, 64, 64)).shape == (B, out_dim)
    assert audio.out_dim == visual.out_dim == flow.out_dim == out_dim
    assert n_params(audio) < 0.5e6 and n_params(visual) < 0.5e6  # CPU-sized (docs/methods.md)


def test_encoders_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"B, T, 3, H, W"):
        SmallVisualCNN()(torch.randn(B, 3, 64, 64))
    with pytest.raises(ValueError, match=r"B, T, 2, H, W"):
        SmallVisualCNN(in_channels=2)(torch.randn(B, 3, 3, 64, 64))  # RGB frames into a flow encoder
    with pytest.raises(ValueError, match=r"B, F, T"):
        SmallAudioCNN()(torch.randn(B, 2, 64, 100))


def test_every_family_encodes_every_kind_the_catalog_names():
    assert set(ENCODERS) == {(family, kind) for family in ENCODER_FAMILIES for kind in MODALITY_KINDS}
    with pytest.raises(ValueError, match=r"no 'bogus' encoder for modality kind 'audio'"):
        build_encoder("bogus", "audio")
    with pytest.raises(ValueError, match=r"no 'small_cnn' encoder for modality kind 'depth'"):
        build_encoder("small_cnn", "depth")


# ---- fusion heads ------------------------------------------------------------------------------------


def test_heads_agree_with_the_catalog():
    assert set(HEADS) == set(FUSIONS)
    dims = {"audio": 16, "visual": 24}
    f = {"audio": torch.randn(B, 16), "visual": torch.randn(B, 24)}
    for name, spec in FUSIONS.items():
        head = build_fusion(name, dims, C)
        try:
            head.unimodal_logits(f)
            splits = True
        except NotImplementedError:
            splits = False
        assert splits == spec.splits_logits, name


@pytest.mark.parametrize("dims", [{"audio": 16, "visual": 24}, {"audio": 16, "visual": 24, "flow": 8}])
def test_concat_unimodal_logits_add_up_to_the_fused_logits(dims):
    torch.manual_seed(0)
    head = ConcatFusion(dims, C)
    f = {m: torch.randn(B, d) for m, d in dims.items()}
    z, parts = head(f), head.unimodal_logits(f)
    assert list(parts) == list(dims) and all(p.shape == (B, C) for p in parts.values())
    assert torch.allclose(sum(parts.values()), z, atol=1e-6)
    # each part is its own block of W and an equal share of the bias: z_m = f_m W_m^T + b / M (docs/methods.md)
    first = next(iter(dims))
    w_first = head.fc.weight[:, : dims[first]]
    assert torch.allclose(parts[first], f[first] @ w_first.T + head.fc.bias / len(dims), atol=1e-6)


def test_concat_reads_features_in_its_own_modality_order():
    torch.manual_seed(0)
    head = ConcatFusion({"audio": 4, "visual": 6}, C)
    f = {"audio": torch.randn(B, 4), "visual": torch.randn(B, 6)}
    assert torch.equal(head(f), head({"visual": f["visual"], "audio": f["audio"]}))


@pytest.mark.parametrize("dims", [{"audio": 16, "visual": 24}, {"audio": 16, "visual": 24, "flow": 8}])
def test_sum_unimodal_logits_are_the_branches(dims):
    torch.manual_seed(0)
    head = SumFusion(dims, C)
    f = {m: torch.randn(B, d) for m, d in dims.items()}
    parts = head.unimodal_logits(f)
    assert torch.allclose(sum(parts.values()), head(f), atol=1e-6)
    for m in dims:
        assert torch.allclose(parts[m], head.fc[m](f[m]))


@pytest.mark.parametrize(
    "name,kw", [("film", {}), ("film", {"x_film": False}), ("gated", {}), ("gated", {"x_gate": False})]
)
def test_film_and_gated_have_no_unimodal_logits(name, kw):
    head = build_fusion(name, {"audio": 16, "visual": 24}, C, **kw)
    f = {"audio": torch.randn(B, 16), "visual": torch.randn(B, 24)}
    assert head(f).shape == (B, C)
    with pytest.raises(NotImplementedError, match=rf"{name} fusion has no per-modality logits.*'concat', 'sum'"):
        head.unimodal_logits(f)


def test_film_direction_follows_x_film():
    torch.manual_seed(0)
    dims = {"audio": 16, "visual": 24}
    forward, backward = build_fusion("film", dims, C), build_fusion("film", dims, C, x_film=False)
    assert (forward.film, forward.target) == ("audio", "visual")
    assert (backward.film, backward.target) == ("visual", "audio")
    assert forward.fc.in_features == 16 and forward.fc.out_features == 2 * 24


@pytest.mark.parametrize("name", ["film", "gated"])
def test_two_modality_heads_refuse_three(name):
    with pytest.raises(ValueError, match=rf"{name} fusion is defined for two modalities.*'audio', 'visual', 'flow'"):
        build_fusion(name, {"audio": 8, "visual": 8, "flow": 8}, C)


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match=r"'bogus'.*\['concat', 'film', 'gated', 'sum'\]"):
        build_fusion("bogus", {"audio": 8, "visual": 8}, C)


# ---- models ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_multimodal_model_forward_backward(fusion):
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", fusion, C, AV))
    assert isinstance(model, MultimodalModel) and model.modalities == ("audio", "visual")
    out = model(inputs_for(AV))
    assert isinstance(out, Output) and out.keep is None and out.unimodal == {}
    assert out.logits.shape == (B, C) and {m: f.shape for m, f in out.features.items()} == {
        "audio": (B, 128),
        "visual": (B, 128),
    }
    out.logits.sum().backward()
    for m, enc in model.encoders.items():
        grads = [p.grad for p in enc.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), m
    split = unimodal_logits(model, out)
    assert set(split) == (set(AV) if FUSIONS[fusion].splits_logits else set())


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_three_modalities_train_through_one_head(fusion):
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", fusion, C, AVF))
    out = model(inputs_for(AVF))
    assert out.logits.shape == (B, C) and list(out.features) == ["audio", "visual", "flow"]
    parts = unimodal_logits(model, out)
    assert torch.allclose(sum(parts.values()), out.logits, atol=1e-5)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.encoders["flow"].parameters())


def test_unimodal_heads_are_added_when_asked():
    plain = build_model(ModelSpec("small_cnn", "concat", C, AV))
    torch.manual_seed(0)
    with_heads = build_model(ModelSpec("small_cnn", "concat", C, AV, unimodal_heads=True))
    assert len(plain.heads) == 0 and set(with_heads.heads) == set(AV)
    assert n_params(with_heads) - n_params(plain) == 2 * (128 * C + C)
    out = with_heads(inputs_for(AV))
    assert with_heads.heads["audio"](out.features["audio"]).shape == (B, C)


def test_unimodal_model_sees_only_its_modality_and_gives_its_logits():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", "none", C, {"visual": "frames"}))
    assert isinstance(model, UnimodalModel) and model.modalities == ("visual",)
    out = model(inputs_for(AV))  # the audio input is there and ignored
    assert set(out.features) == {"visual"} and torch.equal(out.unimodal["visual"], out.logits)
    assert unimodal_logits(model, out) == out.unimodal
    with pytest.raises(ValueError, match=r"fusion 'none' is for one modality; got \['audio', 'visual'\]"):
        build_model(ModelSpec("small_cnn", "none", C, AV))


def test_late_ensemble_sums_its_members_logits():
    torch.manual_seed(0)
    members = [build_model(ModelSpec("small_cnn", "none", C, {m: k})).eval() for m, k in AV.items()]
    ensemble = LateEnsemble(members).eval()
    x = inputs_for(AV)
    out = ensemble(x)
    with torch.no_grad():
        expected = {m.modalities[0]: m(x).logits for m in members}
    assert ensemble.modalities == ("audio", "visual") and ensemble.n_classes == C
    assert torch.allclose(out.logits, expected["audio"] + expected["visual"])
    assert torch.allclose(out.unimodal["visual"], expected["visual"])
    assert set(out.features) == set(AV)


def test_build_model_is_deterministic():
    def params(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_model(ModelSpec("small_cnn", "concat", C, AV)).parameters()]

    a, b, c = params(0), params(0), params(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
