"""Encoders and fusion heads: shapes, parameter counts, uni-modal logits, refusals, gradients, determinism."""

from __future__ import annotations

import pytest
import torch

from bml.models import (
    FUSIONS,
    ConcatFusion,
    ModelConfig,
    MultimodalModel,
    ResNet18Audio,
    ResNet18Visual,
    SmallAudioCNN,
    SmallVisualCNN,
    SumFusion,
    build_encoders,
    build_fusion,
    build_model,
)

B, C = 2, 10


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("shape", [(B, 64, 64), (B, 1, 64, 64)])
def test_resnet18_audio(shape):
    enc = ResNet18Audio().eval()
    assert enc(torch.randn(shape)).shape == (B, 512) and enc.out_dim == 512
    assert 11.0e6 <= n_params(enc) <= 11.3e6


def test_resnet18_visual():
    enc = ResNet18Visual().eval()
    assert enc(torch.randn(B, 2, 3, 64, 64)).shape == (B, 512) and enc.out_dim == 512
    assert 11.0e6 <= n_params(enc) <= 11.3e6


@pytest.mark.parametrize("out_dim", [128, 32])
def test_small_cnns(out_dim):
    audio, visual = SmallAudioCNN(out_dim=out_dim), SmallVisualCNN(out_dim=out_dim)
    assert audio(torch.randn(B, 64, 100)).shape == (B, out_dim)
    assert audio(torch.randn(B, 1, 64, 100)).shape == (B, out_dim)
    assert visual(torch.randn(B, 3, 3, 64, 64)).shape == (B, out_dim)
    assert audio.out_dim == visual.out_dim == out_dim
    assert n_params(audio) < 0.5e6 and n_params(visual) < 0.5e6


def test_encoders_refuse_bad_shapes():
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        SmallVisualCNN()(torch.randn(B, 3, 64, 64))
    with pytest.raises(ValueError, match="B, F, T"):
        SmallAudioCNN()(torch.randn(B, 2, 64, 100))


def test_concat_unimodal_logits_add_up():
    torch.manual_seed(0)
    head, f_a, f_v = ConcatFusion(16, 24, C), torch.randn(B, 16), torch.randn(B, 24)
    z = head(f_a, f_v)
    z_a, z_v = head.unimodal_logits(f_a, f_v)
    assert z.shape == z_a.shape == z_v.shape == (B, C)
    assert torch.allclose(z_a + z_v, z, atol=1e-6)


def test_sum_unimodal_logits_are_the_branches():
    torch.manual_seed(0)
    head, f_a, f_v = SumFusion(16, 24, C), torch.randn(B, 16), torch.randn(B, 24)
    z = head(f_a, f_v)
    z_a, z_v = head.unimodal_logits(f_a, f_v)
    assert torch.allclose(z_a + z_v, z, atol=1e-6)
    assert torch.allclose(z_a, head.fc_a(f_a)) and torch.allclose(z_v, head.fc_v(f_v))


@pytest.mark.parametrize(
    "name,kw", [("film", {}), ("film", {"x_film": True}), ("gated", {}), ("gated", {"x_gate": False})]
)
def test_film_and_gated_have_no_unimodal_logits(name, kw):
    head = build_fusion(name, 16, 24, C, **kw)
    f_a, f_v = torch.randn(B, 16), torch.randn(B, 24)
    assert head(f_a, f_v).shape == (B, C)
    assert not head.has_unimodal_logits
    with pytest.raises(NotImplementedError, match=rf"{name} fusion has no uni-modal logits.*'concat', 'sum'"):
        head.unimodal_logits(f_a, f_v)


def test_has_unimodal_logits_flags():
    assert {k for k, cls in FUSIONS.items() if cls.has_unimodal_logits} == {"concat", "sum"}


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match=r"'bogus'.*\['concat', 'film', 'gated', 'sum'\]"):
        build_fusion("bogus", 8, 8, C)
    with pytest.raises(ValueError, match=r"'bogus'.*\['resnet18', 'small_cnn'\]"):
        build_encoders("bogus")


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_multimodal_model_forward_backward(fusion):
    audio, visual = build_encoders("small_cnn", out_dim=32)
    model = MultimodalModel(audio, visual, build_fusion(fusion, audio.out_dim, visual.out_dim, C), C)
    out = model(torch.randn(B, 64, 100), torch.randn(B, 3, 3, 64, 64))
    assert set(out) == {"logits", "f_a", "f_v"}
    assert out["logits"].shape == (B, C) and out["f_a"].shape == (B, 32) and out["f_v"].shape == (B, 32)
    out["logits"].sum().backward()
    for enc in (model.audio_encoder, model.visual_encoder):
        grads = [p.grad for p in enc.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_build_model_is_deterministic():
    def params(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_model(ModelConfig(fusion="concat")).parameters()]

    a, b, c = params(0), params(0), params(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_gpu_claims_are_exclusive_between_jobs(tmp_path):
    # Lock files only: what a second training job on the same machine would see (no GPU needed).
    import subprocess
    import sys

    from bml.gpu import claim_gpu, release_gpus

    try:
        assert claim_gpu(2, tmp_path) == 0
        code = f"from bml.gpu import claim_gpu; print(claim_gpu(2, {str(tmp_path)!r}))"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert other.stdout.strip() == "1"  # the other process gets the next GPU; its lock ends with it
        assert claim_gpu(2, tmp_path) == 1
        with pytest.raises(RuntimeError, match="all 2 GPUs are held"):
            claim_gpu(2, tmp_path)
    finally:
        release_gpus()
    assert claim_gpu(1, tmp_path) == 0
    release_gpus()
