"""paretoml.models.vit: patch order, shapes, pluggable (MoE) FFN, bad input."""

from __future__ import annotations

import pytest
import torch

from paretoml.arch.moe import MoE, TopKRouter
from paretoml.models.vit import ViT, ViTConfig


def test_patches_are_row_major_blocks_of_the_image():
    model = ViT(ViTConfig(image_size=4, patch_size=2, in_channels=1))
    img = torch.arange(16.0).view(1, 1, 4, 4)
    p = model.patches(img)
    assert p.shape == (1, 4, 4)
    assert p[0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # top-left 2x2 block
    assert p[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]  # top-right
    assert p[0, 3].tolist() == [10.0, 11.0, 14.0, 15.0]  # bottom-right
    torch.testing.assert_close(model.patches(img.view(1, 16)), p)  # flat input too


def test_vit_logits_and_moe_aux_loss():
    cfg = ViTConfig(image_size=8, patch_size=2, d_model=16, depth=2, n_head=2)
    model = ViT(cfg, ffn_factory=lambda i, d: MoE(d, 2 * d, 4, TopKRouter(k=2)))
    out = model(torch.randn(5, 64))
    assert out.logits.shape == (5, 10) and out.aux_loss is not None and out.aux_loss > 0
    out.logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "w_up" in n)
    assert ViT(cfg)(torch.randn(2, 1, 8, 8)).aux_loss is None


def test_vit_rejects_bad_config_and_input():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        ViTConfig(image_size=8, patch_size=3)
    with pytest.raises(ValueError, match=r"ViTConfig\.depth"):
        ViTConfig(depth=0)
    with pytest.raises(ValueError, match="divisible by n_head"):
        ViTConfig(d_model=10, n_head=4)
    with pytest.raises(ValueError, match=r"ViTConfig\.dropout"):
        ViTConfig(dropout=1.0)
    with pytest.raises(TypeError, match="expected a ViTConfig"):
        ViT({"image_size": 8})
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 8, 8\)"):
        ViT()(torch.randn(2, 3, 8, 8))
