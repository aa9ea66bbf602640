"""Weight-only int8/int4 quantization of `nn.Linear` layers, with mixed-input matmul kernels.

At small batch, decoding is memory-bound: int8 weights halve and int4 weights quarter the
bytes each token moves. `quantize_` replaces every selected `nn.Linear` by a `QuantLinear`
holding packed integer codes plus per-channel or per-group scales (and zeros when
asymmetric); the float weight is dropped. Rounding is round-to-nearest ("rtn") or HQQ
("hqq": half-quadratic optimisation of the zero points, Badri & Shaji 2023, no calibration
data). Measured (docs/quantize.md): HQQ wins on MiniLM embeddings, RTN on GPT perplexity.

    >>> from paretoml.infer.quantize import QuantizeConfig, quantize_
    >>> quantize_(model, QuantizeConfig(bits=4, group_size=128, symmetric=False, method="hqq"))
    >>> y = model(x)                   # CUDA: Triton kernels; CPU: torch's int8/int4 pack kernels

Dequantised weight: ``w = q · s + z`` with q the signed code (int8: -128..127; int4: -8..7),
s, z the scale and zero of the row's group (z = 0 when symmetric). Forward paths:
  * CUDA (fp16/bf16/fp32 activations): `paretoml.infer._triton` (CUDA-core GEMV for M <= 4, tl.dot else).
  * CPU: dequantise + F.linear. ``torch._weight_int8pack_mm`` (int8, per channel, symmetric) and
    ``torch._weight_int4pack_mm_for_cpu`` (int4, groups of 32..256) are wired in but opt-in
    (`USE_TORCH_CPU_KERNELS`): on our CPU they measured 35-50x slower than dequantise + matmul.
  * Anything else (other devices, float64, CUDA without Triton): dequantise + matmul, one warning.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QuantizeConfig", "QuantLinear", "quantize_", "load_quantized_state_dict"]

log = logging.getLogger(__name__)

_GROUP_SIZES = (32, 64, 128, 256)
# torch's CPU mixed-input ops (_weight_int8pack_mm, _weight_int4pack_mm_for_cpu) exist in torch
# 2.13 but measured 35-50x slower than dequantize + F.linear on our 2-core AVX-512 CI machine
# (M=2048, 384->1536: 12.6 s / 19.3 s vs 0.36 s; M=1: 3.9 / 10 ms vs 0.07 ms), so they are opt-in.
USE_TORCH_CPU_KERNELS = False
_CPU_INT4_GROUPS = (32, 64, 128, 256)  # what _weight_int4pack_mm_for_cpu accepts


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize.

    Attributes:
        bits: 8 or 4.
        group_size: None (one scale per output channel) or 32/64/128/256 input features per scale.
        symmetric: True: zero-free codes around 0; False: a float zero per group (min/max range).
        method: "rtn" (round to nearest) or "hqq" (optimises the zeros; needs symmetric=False).
        filter_fn: ``(module, fully_qualified_name) -> bool``; None quantizes every nn.Linear.
        strict: True raises when a layer cannot take the group size; False skips it with one warning.
        hqq_iters: optimisation steps of "hqq".
    """

    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True
    method: str = "rtn"
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    strict: bool = False
    hqq_iters: int = 20

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"QuantizeConfig.bits must be 4 or 8, got {self.bits!r}")
        if self.group_size is not None and self.group_size not in _GROUP_SIZES:
            raise ValueError(f"QuantizeConfig.group_size must be None or one of {_GROUP_SIZES}, "
                             f"got {self.group_size!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"QuantizeConfig.symmetric must be a bool, got {self.symmetric!r}")
        if self.method not in ("rtn", "hqq"):
            raise ValueError(f"QuantizeConfig.method must be 'rtn' or 'hqq', got {self.method!r}")
        if self.method == "hqq" and self.symmetric:
            raise ValueError("QuantizeConfig.method='hqq' optimises zero points: it needs symmetric=False, "
                             "got symmetric=True")
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise ValueError(f"QuantizeConfig.filter_fn must be None or callable, got {self.filter_fn!r}")
        if not isinstance(self.hqq_iters, int) or not 1 <= self.hqq_iters <= 1000:
            raise ValueError(f"QuantizeConfig.hqq_iters must be an int in [1, 1000], got {self.hqq_iters!r}")


# --- packing and the quantizers ---------------------------------------------------------------


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 codes in [0, 15] → (N, ceil(K/2)) uint8; even k in the low nibble."""
    if codes.shape[-1] % 2:
        codes = F.pad(codes, (0, 1), value=8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of `pack_int4`: (N, ceil(K/2)) uint8 → (N, K) uint8 codes in [0, 15]."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)[..., :k]


def _groups(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    n, k = w.shape
    g = k if group_size is None else group_size
    return w.reshape(n, k // g, g)  # (N, G, g)


def _rtn(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool):
    """Round to nearest. Returns signed codes q (N, K) int16 and scale, zero (N, G) fp32."""
    wg = _groups(w.float(), group_size)
    half = 2 ** (bits - 1)  # 128 or 8
    if symmetric:
        s = wg.abs().amax(-1) / (half - 1)  # codes -127..127 / -7..7 (the -half code stays unused)
        s = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.clamp(torch.round(wg / s[..., None]), -half, half - 1)
        z = torch.zeros_like(s)
    else:
        lo, hi = wg.amin(-1), wg.amax(-1)
        s = (hi - lo) / (2 * half - 1)
        s = torch.where(s > 0, s, torch.ones_like(s))
        u = torch.clamp(torch.round((wg - lo[..., None]) / s[..., None]), 0, 2 * half - 1)
        q = u - half
        z = lo + half * s  # w ≈ (u - half)·s + (lo + half·s) = u·s + lo
    return q.reshape(w.shape).to(torch.int16), s, z


def _hqq(w: torch.Tensor, bits: int, group_size: int | None, iters: int):
    """HQQ: keep the min/max scale, optimise the zero by half-quadratic splitting.

    Minimises ‖W − dequant(W)‖_p (p = 0.7, robust to outliers): alternate a generalised
    soft-threshold of the residual (the sparse "outlier" part E) and the closed-form zero
    that fits W − E, with a growing penalty β. Written from the paper's equations."""
    p, beta, kappa = 0.7, 10.0, 1.01
    wg = _groups(w.float(), group_size)  # (N, G, g)
    q, s, z = _rtn(w, bits, group_size, symmetric=False)
    half = 2 ** (bits - 1)
    lo_code, hi_code = -half, half - 1
    s3 = s[..., None]
    z3 = z[..., None]
    best_err, best_z = None, z3.clone()
    for _ in range(iters):
        qg = torch.clamp(torch.round((wg - z3) / s3), lo_code, hi_code)
        r = wg - (qg * s3 + z3)
        err = r.abs().pow(p).sum(-1, keepdim=True)  # per group
        if best_err is None:
            best_err = err
        better = err <= best_err
        best_z = torch.where(better, z3, best_z)
        best_err = torch.where(better, err, best_err)
        # prox of |e|^p: shrink the residual (keeps only the large, outlier-like part)
        e = torch.sign(r) * F.relu(r.abs() - r.abs().clamp_min(1e-12).pow(p - 1) / beta)
        z3 = (wg - e - qg * s3).mean(-1, keepdim=True)
        beta *= kappa
    qg = torch.clamp(torch.round((wg - best_z) / s3), lo_code, hi_code)
    return qg.reshape(w.shape).to(torch.int16), s, best_z[..., 0]


# --- the layer --------------------------------------------------------------------------------


class QuantLinear(nn.Module):
    """A linear layer with int8 or int4 weights: ``y = x · (q·s + z)ᵀ + b``.

    Buffers (all in the state_dict): ``qweight`` — int8 (N, K), or uint8 (N, ceil(K/2)) for int4
    with two codes per byte (even k in the low nibble, stored as code + 8); ``scale`` and, when
    asymmetric, ``zero`` — (N, G) in the original weight dtype; optional ``bias``.
    Build with `QuantLinear.from_linear` or `quantize_`.
    """

    def __init__(self, in_features: int, out_features: int, *, bits: int = 8, group_size: int | None = None,
                 symmetric: bool = True, bias: bool = False, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        super().__init__()
        QuantizeConfig(bits=bits, group_size=group_size, symmetric=symmetric)  # validates
        if group_size is not None and in_features % group_size:
            raise ValueError(f"QuantLinear: in_features ({in_features}) must be divisible by group_size "
                             f"({group_size}); use group_size=None or another group size")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric
        n_groups = 1 if group_size is None else in_features // group_size
        if bits == 8:
            qw = torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        else:
            qw = torch.full((out_features, (in_features + 1) // 2), 0x88, dtype=torch.uint8, device=device)
        self.register_buffer("qweight", qw)
        self.register_buffer("scale", torch.ones(out_features, n_groups, dtype=dtype, device=device))
        self.register_buffer("zero", None if symmetric else torch.zeros(out_features, n_groups, dtype=dtype,
                                                                         device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        self._cache: dict = {}  # per-device kernel layouts, rebuilt after .to() or loading
        self._warned = False

    def num_params(self) -> int:
        """Logical parameters (what the float layer had), for `paretoml.frontier.param_count`."""
        return self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantizeConfig = QuantizeConfig()) -> "QuantLinear":
        """Quantize `linear`'s weight (on its own device) into a new QuantLinear."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantLinear.from_linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        if not w.is_floating_point():
            raise TypeError(f"QuantLinear.from_linear: weight must be floating point, got {w.dtype}")
        q = cls(linear.in_features, linear.out_features, bits=config.bits, group_size=config.group_size,
                symmetric=config.symmetric, bias=linear.bias is not None, dtype=w.dtype, device=w.device)
        if config.method == "hqq":
            codes, s, z = _hqq(w, config.bits, config.group_size, config.hqq_iters)
        else:
            codes, s, z = _rtn(w, config.bits, config.group_size, config.symmetric)
        if config.bits == 8:
            q.qweight.copy_(codes.to(torch.int8))
        else:
            q.qweight.copy_(pack_int4((codes + 8).to(torch.uint8)))
        q.scale.copy_(s.to(w.dtype))
        if q.zero is not None:
            q.zero.copy_(z.to(w.dtype))
        if linear.bias is not None:
            q.bias.data.copy_(linear.bias.detach())
        return q

    def codes(self) -> torch.Tensor:
        """Signed integer codes (N, K) as int16."""
        if self.bits == 8:
            return self.qweight.to(torch.int16)
        return unpack_int4(self.qweight, self.in_features).to(torch.int16) - 8

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight (N, K) that the layer multiplies by (computed in fp32)."""
        rep = self.in_features if self.group_size is None else self.group_size
        w = self.codes().float() * self.scale.float().repeat_interleave(rep, dim=1)
        if self.zero is not None:
            w = w + self.zero.float().repeat_interleave(rep, dim=1)
        return w.to(dtype or self.scale.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}, bias={self.bias is not None}")

    # -- state handling

    def _apply(self, fn, recurse=True):
        self._cache = {}
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._check_state(state_dict, prefix)
        self._cache = {}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_state(self, state_dict, prefix):
        """Clear errors for float or mismatched state instead of PyTorch's key/shape lists."""
        where = prefix.rstrip(".") or "QuantLinear"
        if prefix + "weight" in state_dict and prefix + "qweight" not in state_dict:
            raise ValueError(f"{where}: got a float 'weight' for a quantized layer; load the float state_dict "
                             f"into the float model first, then call quantize_")
        qw = state_dict.get(prefix + "qweight")
        if qw is not None and (qw.dtype != self.qweight.dtype or qw.shape != self.qweight.shape):
            raise ValueError(f"{where}: state_dict holds qweight {qw.dtype} {tuple(qw.shape)} but this layer is "
                             f"{self.bits}-bit with qweight {self.qweight.dtype} {tuple(self.qweight.shape)}; "
                             f"quantize with the same QuantizeConfig (bits, group_size) as the saved model")
        sc = state_dict.get(prefix + "scale")
        if sc is not None and sc.shape != self.scale.shape:
            raise ValueError(f"{where}: state_dict scale has shape {tuple(sc.shape)}, this layer expects "
                             f"{tuple(self.scale.shape)} (group_size={self.group_size}); use the saved group_size")
        has_zero = prefix + "zero" in state_dict
        if has_zero != (self.zero is not None):
            saved = "asymmetric (has 'zero')" if has_zero else "symmetric"
            raise ValueError(f"{where}: state_dict is {saved} but this layer has symmetric={self.symmetric}; "
                             f"quantize with the same symmetric setting as the saved model")

    # -- forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if shape[-1] != self.in_features:
            raise ValueError(f"QuantLinear.forward: expected last dim {self.in_features}, got {tuple(shape)}")
        x2 = x.reshape(-1, self.in_features)
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16, torch.float32) and _triton_ok():
            y = self._forward_triton(x2)
        elif x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
            y = self._forward_cpu(x2)
        else:
            self._warn_fallback(x)
            y = F.linear(x2, self.dequantize(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        return y.reshape(*shape[:-1], self.out_features)

    def _warn_fallback(self, x: torch.Tensor) -> None:
        if not self._warned:
            self._warned = True
            why = "Triton is not available" if x.is_cuda else f"no fast kernel for {x.device.type}/{x.dtype}"
            warnings.warn(f"QuantLinear: {why}; falling back to dequantize + matmul (slower, same result)",
                          RuntimeWarning, stacklevel=3)

    def _forward_triton(self, x: torch.Tensor) -> torch.Tensor:
        from paretoml.infer import _triton

        key = ("cuda", x.device)
        if key not in self._cache:
            self._cache[key] = _triton.gpu_pack(self.qweight, self.bits, self.in_features)
        scale = self.scale.contiguous()
        zero = None if self.zero is None else self.zero.contiguous()
        return _triton.qlinear(x, self._cache[key], scale, zero, self.bias, self.bits, self.group_size,
                               self.in_features)

    def _forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if not USE_TORCH_CPU_KERNELS:
            return F.linear(x, self.dequantize(x.dtype), bias)
        if self.bits == 8 and self.group_size is None and self.zero is None and hasattr(torch, "_weight_int8pack_mm"):
            y = torch._weight_int8pack_mm(x.contiguous(), self.qweight, self.scale[:, 0].to(x.dtype))
            return y if bias is None else y + bias
        gs = self.group_size
        if (self.bits == 4 and gs in _CPU_INT4_GROUPS and self.out_features % 16 == 0
                and hasattr(torch, "_weight_int4pack_mm_for_cpu")):
            if "cpu4" not in self._cache:
                codes = unpack_int4(self.qweight, self.in_features).to(torch.int32)
                packed = torch._convert_weight_to_int4pack_for_cpu(codes, 2)
                zero = self.zero if self.zero is not None else torch.zeros_like(self.scale)
                # tinygemm's convention is w = (u - 8)·s + z with u the unsigned code: ours exactly
                sz = torch.stack((self.scale.float().t(), zero.float().t()), dim=-1).contiguous()  # (G, N, 2)
                self._cache["cpu4"] = (packed, sz)
            packed, sz = self._cache["cpu4"]
            y = torch._weight_int4pack_mm_for_cpu(x.contiguous(), packed, gs, sz.to(x.dtype))
            return y if bias is None else y + bias
        return F.linear(x, self.dequantize(x.dtype), bias)


def _triton_ok() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# --- the verb ---------------------------------------------------------------------------------


def quantize_(model: nn.Module, config: QuantizeConfig = QuantizeConfig()) -> None:
    """Replace the selected `nn.Linear` layers of `model` by `QuantLinear`, in place.

    Layers whose in_features is not divisible by `group_size` are skipped with one warning
    that lists them (or, with ``strict=True``, raise ValueError before anything changes).
    Layers with a non-float weight are skipped the same way.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantizeConfig):
        raise TypeError(f"quantize_: config must be a QuantizeConfig, got {type(config).__name__}")
    chosen, skipped = [], []
    for name, m in model.named_modules():
        if type(m) is not nn.Linear or (config.filter_fn is not None and not config.filter_fn(m, name)):
            continue
        if not m.weight.is_floating_point():
            skipped.append(f"{name} (weight dtype {m.weight.dtype})")
        elif config.group_size is not None and m.in_features % config.group_size:
            skipped.append(f"{name} (in_features {m.in_features} % group_size {config.group_size} != 0)")
        else:
            chosen.append(name)
    if skipped and config.strict:
        raise ValueError(f"quantize_: {len(skipped)} layer(s) cannot be quantized with this config: "
                         f"{', '.join(skipped)}; use strict=False to skip them, or group_size=None")
    if skipped:
        warnings.warn(f"quantize_: skipped {len(skipped)} layer(s) left in float: {', '.join(skipped)}",
                      UserWarning, stacklevel=2)
    for name in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, QuantLinear.from_linear(getattr(parent, attr), config))
    log.info("quantize_: %d layers to %d-bit", len(chosen), config.bits)


def load_quantized_state_dict(model: nn.Module, state_dict: dict, strict: bool = True):
    """`model.load_state_dict` with a clear error when `model` has not been quantized the same way.

    A quantized state_dict (keys ``*.qweight``) fits only a model that went through
    `quantize_` with the same config: build the float model, call `quantize_`, then load.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_quantized_state_dict: model must be an nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    for key in state_dict:
        if not key.endswith("qweight"):
            continue
        name = key[: -len("qweight")].rstrip(".")
        m = modules.get(name)
        if isinstance(m, nn.Linear):
            bits = 8 if state_dict[key].dtype == torch.int8 else 4
            raise ValueError(f"load_quantized_state_dict: '{name}' is a float nn.Linear but the state_dict holds a "
                             f"{bits}-bit quantized layer; call quantize_(model, QuantizeConfig(bits={bits}, ...)) "
                             f"with the saved config before loading")
    return model.load_state_dict(state_dict, strict=strict)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the weights a forward pass reads: QuantLinear codes + scales/zeros, float Linear weights."""
    total = 0
    for m in module.modules():
        if isinstance(m, QuantLinear):
            total += sum(t.numel() * t.element_size() for t in (m.qweight, m.scale, m.zero) if t is not None)
        elif isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    return total


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(‖ref‖² / ‖ref − approx‖²) in dB."""
    ref, approx = ref.double(), approx.double()
    noise = (ref - approx).pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(ref.pow(2).sum().item() / noise)


def build_demo_variants(ctx) -> list:
    """`paretoml demo` builder: int8 and int4 weight-only variants of the best digits MLP.

    The digits MLP has 64 and `hidden` input features, so int4 uses groups of 32 (or per
    channel where a layer is narrower)."""
    import copy

    from paretoml.demo import _torch_variant

    h, teacher = ctx.best_teacher()
    out = []
    for name, cfg in (("int8w", QuantizeConfig(bits=8)),
                      ("int4w-g32", QuantizeConfig(bits=4, group_size=32, symmetric=False, method="hqq"))):
        q = copy.deepcopy(teacher)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a layer narrower than the group stays float: fine here
            quantize_(q, cfg)
        out.append(_torch_variant(f"mlp-h{h}-{name}", q, {"technique": "weight-only quantization", "hidden": h,
                                                          "bits": cfg.bits, "group_size": cfg.group_size,
                                                          "method": cfg.method}))
    return out
