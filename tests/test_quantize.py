"""Tests of paretoml.infer.quantize: packing, quantizers, QuantLinear paths, quantize_, bad input.

GPU tests (marked `gpu`) compare the Triton kernels with an independent fp64 reference on
random ragged shapes; they run on the device machine, not in CI.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from paretoml.infer.quantize import (
    QuantizeConfig,
    QuantLinear,
    load_quantized_state_dict,
    pack_int4,
    quantize_,
    sqnr_db,
    unpack_int4,
)
from paretoml.models import GPT, GPTConfig


def _ref_dequant(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Independent RTN reference in float64, written from the formulas (no code shared)."""
    n, k = w.shape
    g = k if group_size is None else group_size
    out = torch.empty(n, k, dtype=torch.float64)
    qmax = 2 ** bits - 1
    for r in range(n):
        for j in range(0, k, g):
            v = w[r, j:j + g].double()
            if symmetric:
                s = v.abs().max() / (2 ** (bits - 1) - 1)
                s = s if s > 0 else torch.tensor(1.0, dtype=torch.float64)
                q = torch.clamp(torch.round(v / s), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
                out[r, j:j + g] = q * s
            else:
                lo, hi = v.min(), v.max()
                s = (hi - lo) / qmax
                s = s if s > 0 else torch.tensor(1.0, dtype=torch.float64)
                u = torch.clamp(torch.round((v - lo) / s), 0, qmax)
                out[r, j:j + g] = u * s + lo
    return out


# --- packing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 7, 64, 129])
def test_pack_int4_round_trip_exact(k):
    g = torch.Generator().manual_seed(k)
    codes = torch.randint(0, 16, (5, k), generator=g, dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (5, (k + 1) // 2) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, k), codes)


def test_pack_int4_layout_low_nibble_first():
    codes = torch.tensor([[1, 2, 3, 4, 5]], dtype=torch.uint8)
    assert pack_int4(codes).tolist() == [[0x21, 0x43, 0x85]]  # odd tail padded with code 8


# --- quantizers ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,group_size,symmetric", [(8, None, True), (8, 32, False), (4, 64, True),
                                                       (4, 32, False), (4, None, False)])
def test_dequantize_matches_independent_reference(bits, group_size, symmetric):
    torch.manual_seed(0)
    lin = nn.Linear(128, 12)
    q = QuantLinear.from_linear(lin, QuantizeConfig(bits=bits, group_size=group_size, symmetric=symmetric))
    ref = _ref_dequant(lin.weight.detach(), bits, group_size, symmetric)
    # fp32 vs fp64 arithmetic: a code may round differently only at an exact .5 tie, which
    # random weights never hit, so the weights agree to float32 precision.
    torch.testing.assert_close(q.dequantize(torch.float64), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bits,group_size,symmetric,method,threshold_db", [
    (8, None, True, "rtn", 40.0), (8, 128, False, "rtn", 40.0),
    (4, 128, False, "rtn", 17.0), (4, 32, False, "rtn", 20.0), (4, 128, False, "hqq", 17.0),
])
def test_quantlinear_output_sqnr(bits, group_size, symmetric, method, threshold_db):
    # Thresholds: b-bit uniform quantization of a Gaussian-like weight gives ~6 dB per bit
    # minus the peak-to-rms loss of the range; 40 dB (int8) and 17 dB (int4 g128) leave margin.
    torch.manual_seed(1)
    lin = nn.Linear(512, 256)
    nn.init.normal_(lin.weight, std=0.02)
    x = torch.randn(8, 512)
    q = QuantLinear.from_linear(lin, QuantizeConfig(bits=bits, group_size=group_size, symmetric=symmetric,
                                                     method=method))
    assert sqnr_db(lin(x).detach(), q(x)) >= threshold_db


def test_hqq_weight_error_not_worse_than_rtn_on_heavy_tails():
    # HQQ optimises an l_p (p<1) error, robust to outliers: on heavy-tailed weights its l_p error
    # must not exceed round-to-nearest's with the same scale.
    torch.manual_seed(2)
    w = torch.distributions.StudentT(3.0).sample((64, 256)) * 0.02
    lin = nn.Linear(256, 64, bias=False)
    lin.weight.data.copy_(w)
    cfg = QuantizeConfig(bits=4, group_size=64, symmetric=False)
    e_rtn = (QuantLinear.from_linear(lin, cfg).dequantize() - w).abs().pow(0.7).sum()
    e_hqq = (QuantLinear.from_linear(lin, dataclasses.replace(cfg, method="hqq")).dequantize() - w).abs().pow(0.7).sum()
    assert e_hqq <= e_rtn * 1.0001


# --- CPU forward paths -----------------------------------------------------------------------


@pytest.mark.parametrize("bits,group_size,symmetric,dtype", [
    (8, None, True, torch.float32),  # torch._weight_int8pack_mm
    (8, None, True, torch.bfloat16),
    (4, 64, False, torch.float32),  # torch._weight_int4pack_mm_for_cpu
    (4, 32, True, torch.float32),
    (8, 64, False, torch.float32),  # dequantize + matmul
    (4, None, True, torch.float32),
])
@pytest.mark.parametrize("torch_kernels", [True, False])
def test_cpu_forward_equals_dequantized_matmul(bits, group_size, symmetric, dtype, torch_kernels, monkeypatch):
    from paretoml.infer import quantize as qmod

    monkeypatch.setattr(qmod, "USE_TORCH_CPU_KERNELS", torch_kernels)
    torch.manual_seed(3)
    lin = nn.Linear(256, 48, bias=True)
    q = QuantLinear.from_linear(lin, QuantizeConfig(bits=bits, group_size=group_size, symmetric=symmetric))
    x = torch.randn(2, 3, 256)
    ref = F.linear(x.double(), q.dequantize(torch.float64), lin.bias.double())
    y = q.to(dtype)(x.to(dtype))
    assert y.shape == (2, 3, 48) and y.dtype == dtype
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert ((y.double() - ref).norm() / ref.norm()).item() < tol


def test_float64_input_falls_back_with_one_warning():
    lin = nn.Linear(64, 16).double()
    q = QuantLinear.from_linear(lin, QuantizeConfig(bits=8))
    x = torch.randn(3, 64, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="falling back"):
        y = q(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q(x)  # second call: no second warning
    torch.testing.assert_close(y, F.linear(x, q.dequantize(torch.float64), lin.bias))


def test_forward_wrong_width_raises():
    q = QuantLinear(64, 8)
    with pytest.raises(ValueError, match="expected last dim 64"):
        q(torch.randn(2, 32))


# --- quantize_ on models ---------------------------------------------------------------------


def _tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig.llama(vocab_size=65, n_layer=2, n_head=4, n_embd=64, block_size=32)).eval()


def test_quantize_gpt_replaces_linears_and_keeps_logits_close():
    model = _tiny_gpt()
    idx = torch.randint(0, 65, (2, 16))
    ref = model(idx).logits.detach()
    quantize_(model, QuantizeConfig(bits=8))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear" not in kinds and "QuantLinear" in kinds
    assert sqnr_db(ref, model(idx).logits.detach()) > 30.0


def test_quantize_filter_fn_selects_layers():
    model = _tiny_gpt()
    quantize_(model, QuantizeConfig(bits=4, group_size=32, filter_fn=lambda m, name: "ffn" in name))
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, QuantLinear)):
            assert isinstance(m, QuantLinear) == ("ffn" in name), name


def test_quantize_skips_indivisible_layers_with_one_warning():
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 48), nn.Linear(48, 8))
    with pytest.warns(UserWarning) as rec:
        quantize_(model, QuantizeConfig(bits=4, group_size=64))
    assert len(rec) == 1 and "1 (in_features 32" in str(rec[0].message) and "2 (in_features 48" in str(rec[0].message)
    assert isinstance(model[0], QuantLinear) and type(model[1]) is nn.Linear and type(model[2]) is nn.Linear


def test_quantize_strict_raises_before_changing_anything():
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 8))
    with pytest.raises(ValueError, match="cannot be quantized.*1 \\(in_features 32"):
        quantize_(model, QuantizeConfig(bits=8, group_size=64, strict=True))
    assert type(model[0]) is nn.Linear


def test_quantize_rejects_wrong_types():
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_("model", QuantizeConfig())
    with pytest.raises(TypeError, match="QuantizeConfig"):
        quantize_(nn.Linear(4, 4), {"bits": 8})
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantLinear.from_linear(nn.Conv1d(2, 2, 1))


def test_quantlinear_rejects_indivisible_group():
    with pytest.raises(ValueError, match="divisible by group_size"):
        QuantLinear(100, 8, group_size=32)


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("bits", 3), ("group_size", 48), ("method", "gptq"),
                                         ("symmetric", 1), ("hqq_iters", 0), ("filter_fn", 3)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"QuantizeConfig.{field}"):
        QuantizeConfig(**{field: value})


def test_config_hqq_needs_asymmetric():
    with pytest.raises(ValueError, match="symmetric=False"):
        QuantizeConfig(method="hqq", symmetric=True)


def test_config_asdict_round_trips():
    cfg = QuantizeConfig(bits=4, group_size=128, symmetric=False, method="hqq")
    assert QuantizeConfig(**dataclasses.asdict(cfg)) == cfg


# --- state_dict ------------------------------------------------------------------------------


def test_state_dict_save_load_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _tiny_gpt()
    cfg = QuantizeConfig(bits=4, group_size=32, symmetric=False)
    quantize_(model, cfg)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({k: v for k, v in sd.items() if "lm_head" not in k or True}, str(tmp_path / "q.safetensors"))
    fresh = _tiny_gpt()
    torch.manual_seed(99)
    for p in fresh.parameters():
        p.data.normal_()
    quantize_(fresh, cfg)
    load_quantized_state_dict(fresh, load_file(str(tmp_path / "q.safetensors")))
    idx = torch.randint(0, 65, (1, 8))
    torch.testing.assert_close(fresh(idx).logits, model(idx).logits, rtol=0, atol=0)


def test_loading_quantized_state_into_float_model_raises():
    model = _tiny_gpt()
    quantize_(model, QuantizeConfig(bits=8))
    with pytest.raises(ValueError, match="float nn.Linear.*quantize_"):
        load_quantized_state_dict(_tiny_gpt(), model.state_dict())
    with pytest.raises(TypeError, match="nn.Module"):
        load_quantized_state_dict(None, {})


def test_loading_float_or_mismatched_state_into_quantized_model_raises():
    lin = nn.Linear(64, 16)
    q8 = QuantLinear.from_linear(lin, QuantizeConfig(bits=8))
    with pytest.raises(ValueError, match="float 'weight'"):
        q8.load_state_dict(lin.state_dict())
    q4 = QuantLinear.from_linear(lin, QuantizeConfig(bits=4, group_size=32))
    with pytest.raises(ValueError, match="4-bit|8-bit"):
        q8.load_state_dict(q4.state_dict())
    q8g = QuantLinear.from_linear(lin, QuantizeConfig(bits=8, group_size=32))
    with pytest.raises(ValueError, match="group_size"):
        q8.load_state_dict(q8g.state_dict())
    q8a = QuantLinear.from_linear(lin, QuantizeConfig(bits=8, symmetric=False))
    with pytest.raises(ValueError, match="symmetric"):
        q8.load_state_dict(q8a.state_dict())


def test_import_is_lean():
    code = ("import sys, paretoml.infer.quantize, paretoml.infer; "
            "assert 'triton' not in sys.modules, 'triton imported'; "
            "import torch; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- GPU (device machine) --------------------------------------------------------------------


def _rand_canonical(bits, n, k, gs, zero, dtype, g):
    lin = nn.Linear(k, n, bias=False)
    nn.init.normal_(lin.weight, std=0.05, generator=g)
    q = QuantLinear.from_linear(lin, QuantizeConfig(bits=bits, group_size=gs, symmetric=not zero))
    return q.to(dtype)


def _check_kernel(bits, gs, zero, dtype, shapes, all_configs, seed):
    from paretoml.infer import _triton

    g = torch.Generator().manual_seed(seed)
    for m, n, k in shapes:
        q = _rand_canonical(bits, n, k, gs, zero, dtype, g).cuda()
        q.bias = nn.Parameter(torch.randn(n, generator=g).to(dtype).cuda()) if m % 2 else None
        x = torch.randn(m, k, generator=g).to(dtype).cuda()
        ref = F.linear(x.double(), q.dequantize(torch.float64), None if q.bias is None else q.bias.double())
        wq = _triton.gpu_pack(q.qweight, bits, k)
        mb = _triton._m_bucket(m)
        cands = _triton.configs_for(mb, bits, gs) if all_configs else [_triton._default(mb, bits, gs)]
        for cand in cands:
            for _ in range(2):  # twice: split-K arrival counters must re-arm themselves
                poisoned = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")  # every element written
                y = _triton.qlinear(x, wq, q.scale, q.zero, q.bias, bits, gs, k, config=cand, out=poisoned)
                assert y.dtype == dtype and torch.isfinite(y).all(), (m, n, k, cand)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                assert err < 1e-2, (m, n, k, cand, err)  # half-precision operands: 1e-3..1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("bits,gs,zero,dtype", [
    (8, None, False, torch.bfloat16), (4, 128, True, torch.bfloat16),
    # the packed int4 → half conversion: fp16's own constants, and 32-groups (two scales per chunk)
    (4, 128, True, torch.float16), (4, 32, True, torch.bfloat16), (4, None, False, torch.float16),
])
def test_triton_every_candidate_config_matches_reference(bits, gs, zero, dtype):
    # The tuner may pick any candidate (split-K and conversion variants too), so each one is
    # checked, on ragged M/N/K; odd M also adds a bias (split-K must add it once).
    shapes = [(1, 40, 768), (5, 33, 384), (17, 72, 256), (40, 130, 512), (300, 64, 256)]
    if gs is None:
        shapes += [(1, 31, 100), (33, 50, 136)]  # K not a multiple of the 32/64 chunk
    _check_kernel(bits, gs, zero, dtype, shapes, True, bits)


@pytest.mark.gpu
@pytest.mark.parametrize("bits,gs,zero,dtype", [
    (8, None, True, torch.bfloat16), (8, 32, True, torch.bfloat16), (4, None, False, torch.bfloat16),
    (4, 32, True, torch.bfloat16), (8, None, False, torch.float16), (4, 64, True, torch.float32),
])
def test_triton_default_configs_match_reference(bits, gs, zero, dtype):
    shapes = [(1, 40, 256), (19, 72, 256)]
    if gs is None:
        shapes.append((3, 24, 200))
    _check_kernel(bits, gs, zero, dtype, shapes, False, bits + (gs or 0))


@pytest.mark.gpu
def test_quantized_gpt_on_gpu_matches_cpu(monkeypatch):
    from paretoml.infer import _triton

    monkeypatch.setattr(_triton, "TUNE", False)
    model = _tiny_gpt()
    quantize_(model, QuantizeConfig(bits=4, group_size=32, symmetric=False))
    idx = torch.randint(0, 65, (2, 8))
    cpu = model(idx).logits
    gpu = model.cuda()(idx.cuda()).logits.cpu()
    assert ((gpu - cpu).norm() / cpu.norm()).item() < 5e-3  # fp32 activations: the tl.dot path runs in tf32
