"""Sparse mixture-of-experts FFN: token-choice top-k, Expert Choice, Batch Priority Routing, Task-MoE.

One layer, `MoE(d_model, d_hidden, num_experts, router)`, and four routing rules:

- `TopKRouter(k, capacity_factor, jitter)`: each token picks its k best experts (GShard/GLaM
  k=2, Switch k=1); an expert keeps at most ``C = ceil(capacity_factor * tokens * k / E)``
  tokens, filled with all first choices before any second choice, in token order; the rest
  skip the layer (output 0, the residual carries them). ``capacity_factor=None``: dropless.
- `BatchPriorityRouter(k, capacity_ratio)` (V-MoE, Riquelme et al. 2021): the same, but tokens
  fill the buffers in order of their highest routing weight, so with C < 1 the confident
  tokens are the ones kept.
- `ExpertChoiceRouter(capacity_factor)` (Zhou et al. 2022): each expert takes its top
  ``tokens * c / E`` tokens of the batch; perfect balance, no balance loss. It is *not causal*
  (a token's experts depend on the other tokens of the batch, future ones included), so in
  eval mode it falls back, by default, to per-token top-k over the same scores
  (``eval_mode="topk"``, k = round(c)); see `ExpertChoiceRouter`.
- `TaskRouter(num_tasks, k)` (Task-MoE, Kudugunta et al. 2021): every token of a task goes to
  the task's k experts; `extract_task_submodel` cuts the other experts out for serving.

Dispatch has no Python loop over tokens: tokens are sorted by expert, run through a grouped
matmul (`torch.nn.functional.grouped_mm` / `torch._grouped_mm` when the build and device have it,
else a padded batched matmul) and gathered back. The router runs in float32.

    >>> moe = MoE(512, 2048, num_experts=8, router=TopKRouter(k=2, capacity_factor=1.25))
    >>> res = moe(x)                     # x (B, T, 512)
    >>> loss = task_loss + res.aux_loss  # balance + z-loss, already weighted
    >>> res.stats["load"], res.stats["dropped_tokens"]
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TopKRouter",
    "BatchPriorityRouter",
    "ExpertChoiceRouter",
    "TaskRouter",
    "MoE",
    "MoEOutput",
    "task_context",
    "extract_task_submodel",
    "grouped_mm_fn",
]

_BACKENDS = ("auto", "grouped", "padded", "loop")
_DISPATCH = ("auto", "fused", "torch")


# --- routers: frozen rules; the learned gate lives in `MoE` ---------------------------------


def _check_k(where: str, k) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{where}.k must be an int >= 1, got {k!r}")


def _check_capacity(where: str, name: str, v, allow_none: bool) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        allowed = "a number > 0 (or None for dropless)" if allow_none else "a number > 0"
        raise ValueError(f"{where}.{name} must be {allowed}, got {v!r}")


@dataclass(frozen=True)
class TopKRouter:
    """Token-choice top-k routing.

    Attributes:
        k: experts per token (1 = Switch, 2 = GShard/GLaM).
        capacity_factor: expert buffer ``ceil(cf * tokens * k / E)``; None = dropless.
        jitter: multiplicative uniform noise ``x * U(1-j, 1+j)`` on the router input while
            training (Switch); 0 = off.
    """

    k: int = 2
    capacity_factor: float | None = 1.25
    jitter: float = 0.0

    def __post_init__(self):
        _check_k("TopKRouter", self.k)
        _check_capacity("TopKRouter", "capacity_factor", self.capacity_factor, allow_none=True)
        if not isinstance(self.jitter, (int, float)) or not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"TopKRouter.jitter must be in [0, 1), got {self.jitter!r}")


@dataclass(frozen=True)
class BatchPriorityRouter:
    """Top-k routing whose buffers are filled by priority (max routing weight), V-MoE's BPR.

    Attributes:
        k: experts per token.
        capacity_ratio: C; expert buffer ``ceil(C * tokens * k / E)``.
    """

    k: int = 2
    capacity_ratio: float = 1.0

    def __post_init__(self):
        _check_k("BatchPriorityRouter", self.k)
        _check_capacity("BatchPriorityRouter", "capacity_ratio", self.capacity_ratio, allow_none=False)


@dataclass(frozen=True)
class ExpertChoiceRouter:
    """Expert Choice routing: each expert picks its top ``ceil(tokens * c / E)`` tokens.

    Attributes:
        capacity_factor: c, the average number of experts per token (2 in the paper).
        eval_mode: what eval mode (``module.eval()``) does. ``"topk"`` (default): each token
            independently takes its top ``round(c)`` experts by the same scores with the same
            gate values, dropless: causal and batch-independent, so KV-cache decoding and
            full-sequence scoring agree. ``"batch"``: keep expert choice over the batch (fine
            for classifiers; not causal, so a (B, 1, C) decode step is refused).
    """

    capacity_factor: float = 2.0
    eval_mode: str = "topk"

    def __post_init__(self):
        _check_capacity("ExpertChoiceRouter", "capacity_factor", self.capacity_factor, allow_none=False)
        if self.eval_mode not in ("topk", "batch"):
            raise ValueError(f"ExpertChoiceRouter.eval_mode must be 'topk' or 'batch', got {self.eval_mode!r}")


@dataclass(frozen=True)
class TaskRouter:
    """Task-level routing: a learned (num_tasks, E) gate table; every token of task t goes to
    the top-k experts of row t. Dropless (a task's load is known ahead of time).

    Attributes:
        num_tasks: number of task ids (0 … num_tasks-1).
        k: experts per task.
    """

    num_tasks: int = 2
    k: int = 1

    def __post_init__(self):
        if not isinstance(self.num_tasks, int) or isinstance(self.num_tasks, bool) or self.num_tasks < 1:
            raise ValueError(f"TaskRouter.num_tasks must be an int >= 1, got {self.num_tasks!r}")
        _check_k("TaskRouter", self.k)


Router = TopKRouter | BatchPriorityRouter | ExpertChoiceRouter | TaskRouter


@dataclass
class MoEOutput:
    """`out` (same shape as the input), `aux_loss` (weighted balance + z-loss, a scalar) and
    `stats`: ``load`` (E,) rows each expert processed, ``dropped_tokens`` (tokens no expert
    processed), ``dropped_assignments`` (choices cut by capacity), ``balance_loss``, ``z_loss``
    (unweighted), all tensors (reading them syncs the device)."""

    out: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


# --- grouped matmul feature detection -------------------------------------------------------


def grouped_mm_fn():
    """The grouped matmul of this torch build (`F.grouped_mm`, else `torch._grouped_mm`), or None.

    Both compute ``out[rows of group g] = a[rows of group g] @ b[g]`` for a (N, K), b (G, K, M)
    and int32 end offsets; the name and its limits (dtype, compute capability) change between
    releases, so callers also check the device and dtype (`_grouped_ok`).
    """
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def _grouped_ok(x: torch.Tensor, *ws: torch.Tensor) -> bool:
    if grouped_mm_fn() is None or not x.is_cuda or x.dtype != torch.bfloat16:
        return False
    if torch.cuda.get_device_capability(x.device)[0] < 8:
        return False
    # the kernels want 16-byte aligned rows: every inner size a multiple of 8 bf16 values
    return all(w.dtype == torch.bfloat16 and w.shape[-1] % 8 == 0 and w.shape[-2] % 8 == 0 for w in ws)


# --- routing: produce a plan (which rows go to which expert, with which weight) -------------


@dataclass
class _Plan:
    """Rows grouped by expert. N = kept (token, expert) pairs.

    src: (N,) token of each row; weight: (N,) fp32 gate; counts: (E,) rows per expert;
    slots: (T, k) row of each (token, choice), -1 if dropped (token-choice rules only; None for
    expert choice, which combines by scatter); order: (N,) flat (token*k + choice) of each row.
    """

    src: torch.Tensor
    weight: torch.Tensor
    counts: torch.Tensor
    slots: torch.Tensor | None
    order: torch.Tensor | None
    dropped_tokens: torch.Tensor
    dropped_assignments: torch.Tensor
    gate: torch.Tensor | None = None  # (T, k) gate of each choice (token-choice rules)
    expert: torch.Tensor | None = None  # (T, k) expert of each choice (token-choice rules)


def _capacity(factor: float, tokens: int, k: int, experts: int) -> int:
    return max(1, math.ceil(factor * tokens * k / experts))


def _topk_gates(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts of each row of probs (T, E) and their gates: the raw probability for k=1
    (Switch, so the router is trained through the gate), renormalised over the k for k>1 (GShard)."""
    gate, expert = probs.topk(k, dim=-1)  # (T, k), choices in descending order
    if k > 1:
        gate = gate / gate.sum(-1, keepdim=True).clamp_min(1e-9)
    return gate, expert


def _count(idx: torch.Tensor, n: int) -> torch.Tensor:
    """How often each of 0..n-1 occurs in idx, as int64 (n,). Unlike CUDA `torch.bincount`, which
    reads the maximum back to the host, a scatter-add never syncs, so the dropless dispatch can be
    captured in a CUDA graph."""
    flat = idx.reshape(-1)
    return torch.zeros(n, dtype=torch.long, device=idx.device).scatter_add_(0, flat, torch.ones_like(flat))


def _token_choice_plan(gate: torch.Tensor, expert: torch.Tensor, num_experts: int,
                       capacity: int | None, priority: torch.Tensor | None) -> _Plan:
    """Plan for token-choice routing. gate/expert (T, k). Buffers fill choice by choice (all
    first choices, then all second ones), within a choice by token order, or by `priority`
    (T,) descending when given (BPR)."""
    T, k = expert.shape
    dev = expert.device
    if capacity is None:  # dropless: a stable sort by expert keeps token order within an expert
        flat = expert.reshape(-1)
        order = torch.argsort(flat, stable=True)  # (T*k,) flat assignment of each row
        counts = _count(flat, num_experts)
        slots = torch.empty(T * k, dtype=torch.long, device=dev)
        slots[order] = torch.arange(T * k, device=dev)
        zero = torch.zeros((), dtype=torch.long, device=dev)
        return _Plan(order // k, gate.reshape(-1)[order], counts, slots.view(T, k), order, zero, zero, gate, expert)
    # priority order of the T*k assignments: choice-major, then token order (or BPR rank)
    tok = torch.arange(T, device=dev) if priority is None else torch.argsort(priority, descending=True, stable=True)
    prio = (tok[None, :] * k + torch.arange(k, device=dev)[:, None]).reshape(-1)  # (k*T,) flat ids
    e_prio = expert.reshape(-1)[prio]
    by_expert = torch.argsort(e_prio, stable=True)  # groups by expert, keeps priority inside
    flat_sorted = prio[by_expert]
    e_sorted = e_prio[by_expert]
    counts_all = _count(e_sorted, num_experts)
    starts = torch.cumsum(counts_all, 0) - counts_all
    pos = torch.arange(T * k, device=dev) - starts[e_sorted]  # position inside the expert buffer
    keep = pos < capacity
    order = flat_sorted[keep]
    counts = counts_all.clamp(max=capacity)
    slots = torch.full((T * k,), -1, dtype=torch.long, device=dev)
    slots[order] = torch.arange(order.numel(), device=dev)
    slots = slots.view(T, k)
    dropped_tokens = (slots < 0).all(-1).sum()
    return _Plan(order // k, gate.reshape(-1)[order], counts, slots, order, dropped_tokens, (~keep).sum(), gate,
                 expert)


def _expert_choice_plan(probs: torch.Tensor, capacity_factor: float) -> _Plan:
    """Each expert e takes the top-c tokens of column e of probs (T, E)."""
    T, E = probs.shape
    cap = min(T, _capacity(capacity_factor, T, 1, E))
    gate, src = probs.t().topk(cap, dim=-1)  # (E, cap): already grouped by expert
    counts = torch.full((E,), cap, dtype=torch.long, device=probs.device)
    hit = torch.zeros(T, dtype=torch.bool, device=probs.device)
    hit[src.reshape(-1)] = True
    zero = torch.zeros((), dtype=torch.long, device=probs.device)
    return _Plan(src.reshape(-1), gate.reshape(-1), counts, None, None, (~hit).sum(), zero)


# --- dispatch / combine as gathers (their backward is a gather too: no scatter, no atomics) --


class _Dispatch(torch.autograd.Function):
    """rows = x[src]; backward sums each token's k rows through `slots` (T, k)."""

    @staticmethod
    def forward(ctx, x, src, slots):
        ctx.save_for_backward(slots)
        return x.index_select(0, src)

    @staticmethod
    def backward(ctx, g):
        (slots,) = ctx.saved_tensors
        T, k = slots.shape
        valid = (slots >= 0).unsqueeze(-1)
        gx = g.index_select(0, slots.clamp_min(0).reshape(-1)).view(T, k, g.shape[1])
        return (gx * valid).sum(1), None, None


class _Combine(torch.autograd.Function):
    """y[t] = sum_j w[t, j] * rows[slots[t, j]] (dropped slots add 0). rows (N, d), w (T, k)."""

    @staticmethod
    def forward(ctx, rows, w, slots, order):
        T, k = slots.shape
        valid = slots >= 0
        wv = (w * valid).to(rows.dtype)
        hv = rows.index_select(0, slots.clamp_min(0).reshape(-1)).view(T, k, rows.shape[1])
        ctx.save_for_backward(rows, wv, slots, order)
        ctx.w_dtype = w.dtype
        return (hv * wv.unsqueeze(-1)).sum(1)

    @staticmethod
    def backward(ctx, g):
        rows, wv, slots, order = ctx.saved_tensors
        T, k = slots.shape
        valid = slots >= 0
        hv = rows.index_select(0, slots.clamp_min(0).reshape(-1)).view(T, k, rows.shape[1])
        gw = ((hv * g.unsqueeze(1)).sum(-1, dtype=torch.float32) * valid).to(ctx.w_dtype)
        grows = (wv.unsqueeze(-1) * g.unsqueeze(1)).reshape(T * k, -1).index_select(0, order)
        return grows, gw, None, None


# --- the layer -------------------------------------------------------------------------------


class MoE(nn.Module):
    """A mixture-of-experts FFN: (…, d_model) → MoEOutput with out of the same shape.

    Each expert is a GELU MLP d_model → d_hidden → d_model (no biases). Expert weights are
    stacked: ``w_up`` (E, d_model, d_hidden), ``w_down`` (E, d_hidden, d_model).

    Args:
        d_model: input and output width.
        d_hidden: each expert's hidden width.
        num_experts: E (global E when `process_group` splits the experts).
        router: one of `TopKRouter`, `BatchPriorityRouter`, `ExpertChoiceRouter`, `TaskRouter`.
        balance_weight: weight of the load-balancing loss ``E * sum_e f_e * P_e``.
        z_loss_weight: weight of the router z-loss ``mean(logsumexp(logits)^2)``.
        backend: expert matmul path: ``"auto"`` (grouped matmul on CUDA bf16 when available,
            else padded batched matmul), ``"grouped"``, ``"padded"``, or ``"loop"`` (one matmul
            per expert, the naive reference).
        dispatch: router and data movement around the expert matmuls: ``"auto"`` (fused Triton
            kernels for token-choice routers on CUDA when Triton is installed, else torch),
            ``"fused"`` (require them) or ``"torch"`` (gathers and torch ops; any device).
            The fused path computes the router logits in fp32 from the bf16/fp16 input without
            an fp32 copy, scatters each token to its k rows in one pass, combines the k rows
            with fp32 accumulation, and in backward fuses the router's input gradient into the
            dispatch gradient (`_moe_triton`). Expert choice, task routing, router jitter and
            expert parallelism (`process_group`) always use the torch path.
        check_finite: raise on NaN/inf router logits. On CUDA this reads one flag back from
            the device per call (a sync); turn it off for the last few percent of throughput.
        device, dtype: where and in which dtype to create the expert weights (the router
            gate is always float32).
        process_group: expert parallelism: this rank holds experts
            ``rank*E/W … (rank+1)*E/W - 1`` and tokens travel by all-to-all (see `_exchange`).
    """

    def __init__(self, d_model: int, d_hidden: int, num_experts: int, router: Router = TopKRouter(), *,
                 balance_weight: float = 1e-2, z_loss_weight: float = 1e-3, backend: str = "auto",
                 dispatch: str = "auto", check_finite: bool = True, process_group=None, device=None, dtype=None):
        super().__init__()
        for name, v in (("d_model", d_model), ("d_hidden", d_hidden), ("num_experts", num_experts)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MoE: {name} must be an int >= 1, got {v!r}")
        if not isinstance(router, (TopKRouter, BatchPriorityRouter, ExpertChoiceRouter, TaskRouter)):
            raise TypeError("MoE: router must be a TopKRouter, BatchPriorityRouter, ExpertChoiceRouter "
                            f"or TaskRouter, got {type(router).__name__}")
        k = getattr(router, "k", 1)
        if k > num_experts:
            raise ValueError(f"MoE: router k={k} exceeds num_experts={num_experts}; use k <= num_experts")
        if backend not in _BACKENDS:
            raise ValueError(f"MoE: backend must be one of {_BACKENDS}, got {backend!r}")
        if dispatch not in _DISPATCH:
            raise ValueError(f"MoE: dispatch must be one of {_DISPATCH}, got {dispatch!r}")
        for name, v in (("balance_weight", balance_weight), ("z_loss_weight", z_loss_weight)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"MoE: {name} must be a finite number >= 0, got {v!r}")
        self.d_model, self.d_hidden, self.num_experts = d_model, d_hidden, num_experts
        self.router = router
        self.balance_weight, self.z_loss_weight = float(balance_weight), float(z_loss_weight)
        self.backend = backend
        self.dispatch = dispatch
        self.check_finite = bool(check_finite)
        self.process_group = process_group
        world, rank = 1, 0
        if process_group is not None:
            import torch.distributed as dist

            world, rank = dist.get_world_size(process_group), dist.get_rank(process_group)
            if num_experts % world:
                raise ValueError(f"MoE: num_experts={num_experts} must divide evenly over {world} ranks")
        self.world, self.rank = world, rank
        e_local = num_experts // world
        # The router: a token gate (E, d) or a task gate table (num_tasks, E); kept in fp32.
        if isinstance(router, TaskRouter):
            self.gate = nn.Parameter(torch.randn(router.num_tasks, num_experts, device=device) * 0.02)
        else:
            self.gate = nn.Parameter(torch.randn(num_experts, d_model, device=device) * d_model**-0.5 * 0.1)
        w_up = torch.randn(e_local, d_model, d_hidden, device=device) * d_model**-0.5
        w_down = torch.randn(e_local, d_hidden, d_model, device=device) * d_hidden**-0.5
        self.w_up = nn.Parameter(w_up.to(dtype or w_up.dtype))
        self.w_down = nn.Parameter(w_down.to(dtype or w_down.dtype))
        self._task_ids: torch.Tensor | None = None  # set by `task_context`

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_hidden={self.d_hidden}, num_experts={self.num_experts}, "
                f"router={self.router}, backend={self.backend!r}, dispatch={self.dispatch!r}")

    # -- routing --------------------------------------------------------------------------
    def _route(self, x: torch.Tensor, task_ids: torch.Tensor | None):
        """x (T, d) → plan, router logits (T, E) in fp32, probs (T, E)."""
        r = self.router
        if isinstance(r, TaskRouter):
            logits = self.gate.to(torch.promote_types(x.dtype, torch.float32))[task_ids]  # (T, E): a row per task
        else:
            xr = x.to(torch.promote_types(x.dtype, torch.float32))  # the router runs in >= fp32
            if isinstance(r, TopKRouter) and r.jitter > 0 and self.training:
                xr = xr * torch.empty_like(xr).uniform_(1.0 - r.jitter, 1.0 + r.jitter)
            logits = F.linear(xr, self.gate.to(xr.dtype))
        probs = logits.softmax(-1)
        return self._plan(logits, probs), logits, probs

    def _check_logits(self, logits: torch.Tensor) -> None:
        if self.check_finite and not bool(torch.isfinite(logits).all()):
            raise ValueError("MoE: router logits are not finite (NaN or inf); check the layer input for "
                             "NaN/inf and lower the learning rate or add normalisation before the MoE")

    def _plan(self, logits: torch.Tensor, probs: torch.Tensor) -> _Plan:
        """Which rows go to which expert with which gate, from the router's logits (T, E)."""
        self._check_logits(logits)
        r = self.router
        T, E = probs.shape
        if isinstance(r, ExpertChoiceRouter):
            if self.training or r.eval_mode == "batch":
                return _expert_choice_plan(probs, r.capacity_factor)
            k = min(E, max(1, round(r.capacity_factor)))
            gate, expert = probs.topk(k, dim=-1)  # the EC gates are raw probabilities: no renorm
            return _token_choice_plan(gate, expert, E, None, None)
        gate, expert = _topk_gates(probs, r.k)
        if isinstance(r, TaskRouter):
            return _token_choice_plan(gate, expert, E, None, None)
        if isinstance(r, BatchPriorityRouter):
            cap = _capacity(r.capacity_ratio, T, r.k, E)
            return _token_choice_plan(gate, expert, E, cap, probs.max(-1).values)
        cap = None if r.capacity_factor is None else _capacity(r.capacity_factor, T, r.k, E)
        return _token_choice_plan(gate, expert, E, cap, None)

    def _use_fused(self, x: torch.Tensor) -> bool:
        """Whether this call takes the fused Triton path (see ``dispatch``)."""
        r = self.router
        if self.dispatch == "torch":
            return False
        # expert parallelism keeps the torch dispatch: the fused path has not been run over NCCL
        eligible = (isinstance(r, (TopKRouter, BatchPriorityRouter)) and self.world == 1
                    and not (isinstance(r, TopKRouter) and r.jitter > 0 and self.training))
        on_device = x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter: CPU tests
        ok = eligible and on_device and x.dtype in (torch.bfloat16, torch.float16, torch.float32) and x.shape[0] > 0
        if ok:
            try:
                from paretoml.arch import _moe_triton  # noqa: F401 - needs triton
            except ImportError:
                ok = False
        if self.dispatch == "fused" and not ok:
            why = ("a TopKRouter (without jitter in training) or BatchPriorityRouter on one process (no "
                   "expert parallelism)" if not eligible else
                   "a non-empty CUDA bf16/fp16/fp32 input and an installed triton")
            raise ValueError(f"MoE: dispatch='fused' needs {why}; got router {type(r).__name__}, "
                             f"{self.world} expert-parallel rank(s), input {x.dtype} on {x.device} with "
                             f"{x.shape[0]} tokens. Use dispatch='auto'")
        return ok

    def _route_fused(self, x: torch.Tensor):
        """Router + dispatch through `_moe_triton`: (plan, rows, aux, balance loss, z-loss, offsets)."""
        from paretoml.arch import _moe_triton

        r = self.router
        T, E = x.shape[0], self.num_experts
        plan = None

        def plan_fn(gate, expert, probs, lse):
            nonlocal plan
            self._check_logits(lse)  # lse is NaN on every row with a non-finite logit
            if isinstance(r, BatchPriorityRouter):
                prio = probs.gather(1, expert[:, :1]).squeeze(1)  # the token's top routing weight
                plan = _token_choice_plan(gate, expert, E, _capacity(r.capacity_ratio, T, r.k, E), prio)
            elif r.capacity_factor is not None:
                plan = _token_choice_plan(gate, expert, E, _capacity(r.capacity_factor, T, r.k, E), None)
            return plan  # None (dropless): the kernels plan and dispatch in one pass

        rows, gate, aux, bal, zl, _, slots, src, counts, offs = _moe_triton.route_dispatch(
            x, self.gate, r.k, plan_fn, self.balance_weight, self.z_loss_weight)
        if plan is None:
            zero = torch.zeros((), dtype=torch.long, device=x.device)
            plan = _Plan(src, None, counts, slots, None, zero, zero)
        plan.gate = gate  # differentiable: the gates train the router
        return plan, rows, aux, bal, zl, offs

    def _aux(self, logits: torch.Tensor, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(balance loss E * sum_e f_e P_e, z-loss mean(logsumexp^2)); 0 with no tokens."""
        if logits.shape[0] == 0:
            z = logits.sum() * 0.0
            return z, z
        zl = torch.logsumexp(logits, -1).pow(2).mean()
        if isinstance(self.router, ExpertChoiceRouter):
            return torch.zeros((), device=logits.device), zl  # balanced by construction
        E = self.num_experts
        f = _count(probs.argmax(-1), E).float() / probs.shape[0]  # top-1 fraction
        return E * (f * probs.mean(0)).sum(), zl

    # -- experts --------------------------------------------------------------------------
    def _experts(self, rows: torch.Tensor, counts: torch.Tensor, offs: torch.Tensor | None = None) -> torch.Tensor:
        """rows (N, d) grouped by local expert with `counts` (E_local,) → (N, d); `offs`: the
        groups' end offsets as int32 if already known."""
        w_up, w_down = self.w_up.to(rows.dtype), self.w_down.to(rows.dtype)
        backend = self.backend
        if backend == "auto":
            backend = "grouped" if _grouped_ok(rows, w_up, w_down) else "padded"
        if rows.shape[0] == 0:
            return rows.new_zeros(0, self.d_model) + 0.0 * (w_up.sum() + w_down.sum())
        if backend == "grouped":
            mm = grouped_mm_fn()
            if mm is None:
                raise RuntimeError("MoE: backend='grouped' but this torch build has no grouped_mm; use 'auto'")
            if offs is None:
                offs = torch.cumsum(counts, 0).to(torch.int32)
            h = F.gelu(mm(rows, w_up, offs=offs), approximate="tanh")
            return mm(h, w_down, offs=offs)
        if backend == "loop":
            outs, start = [], 0
            for e, n in enumerate(counts.tolist()):
                xe = rows[start : start + n]
                outs.append(F.gelu(xe @ w_up[e], approximate="tanh") @ w_down[e])
                start += n
            return torch.cat(outs)
        # padded: (E, M, d) buffers with M = the largest group, one bmm per matrix
        E = counts.numel()
        M = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        e_of_row = torch.repeat_interleave(torch.arange(E, device=rows.device), counts, output_size=rows.shape[0])
        pos = torch.arange(rows.shape[0], device=rows.device) - starts[e_of_row]
        buf = rows.new_zeros(E, M, rows.shape[1])
        buf = buf.index_put((e_of_row, pos), rows)
        h = F.gelu(torch.bmm(buf, w_up), approximate="tanh")
        return torch.bmm(h, w_down)[e_of_row, pos]

    def _exchange(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert parallelism: send rows (grouped by global expert) to the ranks that own their
        experts by all-to-all, run the local experts, send the results back in the same order."""
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_to_all_single

        W, pg = self.world, self.process_group
        EL = self.num_experts // W
        recv_counts = torch.empty_like(counts)  # (W * EL): [source rank][local expert]
        dist.all_to_all_single(recv_counts, counts, group=pg)
        send_split = counts.view(W, EL).sum(1).tolist()
        recv_split = recv_counts.view(W, EL).sum(1).tolist()
        recv = all_to_all_single(rows.new_empty(sum(recv_split), rows.shape[1]), rows,
                                 recv_split, send_split, group=pg)
        # received rows are ordered (source rank, local expert): regroup by local expert
        e_of_row = torch.repeat_interleave(torch.arange(W * EL, device=rows.device) % EL, recv_counts)
        perm = torch.argsort(e_of_row, stable=True)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        out = self._experts(recv[perm], recv_counts.view(W, EL).sum(0))[inv]
        return all_to_all_single(rows.new_empty(rows.shape[0], out.shape[1]), out,
                                 send_split, recv_split, group=pg)

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None) -> MoEOutput:
        """x (…, d_model); task_ids (for `TaskRouter`): one id per leading row (B,) of a
        (B, T, d) input or per token, or set by `task_context`."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.d_model:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"MoE.forward: expected input (..., {self.d_model}), got {got}")
        r = self.router
        if (isinstance(r, ExpertChoiceRouter) and r.eval_mode == "batch" and not self.training
                and x.dim() == 3 and x.shape[1] == 1):
            raise ValueError("MoE.forward: ExpertChoiceRouter(eval_mode='batch') is not causal and cannot "
                             "decode one token at a time (input (B, 1, C)); use eval_mode='topk'")
        shape = x.shape
        xt = x.reshape(-1, self.d_model)  # (T, d)
        tids = self._token_task_ids(task_ids, shape) if isinstance(r, TaskRouter) else None
        fused = self._use_fused(xt)
        offs = None
        if fused:
            plan, rows, aux, bal, zl, offs = self._route_fused(xt)
        else:
            plan, logits, probs = self._route(xt, tids)
            rows = xt.index_select(0, plan.src) if plan.slots is None else _Dispatch.apply(xt, plan.src, plan.slots)
            bal, zl = self._aux(logits, probs)
            aux = self.balance_weight * bal + self.z_loss_weight * zl
        rows = self._exchange(rows, plan.counts) if self.world > 1 else self._experts(rows, plan.counts, offs)
        if plan.slots is None:  # expert choice: a token may have 0…E rows, so scatter-add
            y = torch.zeros_like(xt).index_add(0, plan.src, rows * plan.weight.to(rows.dtype).unsqueeze(-1))
        elif fused:
            from paretoml.arch import _moe_triton

            y = _moe_triton.combine(rows, plan.gate, plan.slots)
        else:
            y = _Combine.apply(rows, plan.gate, plan.slots, plan.order)
        stats = {"load": plan.counts.detach(), "dropped_tokens": plan.dropped_tokens,
                 "dropped_assignments": plan.dropped_assignments, "balance_loss": bal.detach(),
                 "z_loss": zl.detach()}
        return MoEOutput(y.view(shape).to(x.dtype), aux, stats)

    def _token_task_ids(self, task_ids, shape) -> torch.Tensor:
        if task_ids is None:
            task_ids = self._task_ids
        if task_ids is None:
            raise ValueError("MoE.forward: a TaskRouter needs task_ids (forward(x, task_ids=...) or "
                             "`with task_context(model, task_ids):`)")
        task_ids = torch.as_tensor(task_ids, device=self.gate.device).long()
        n = self.router.num_tasks
        if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= n):
            raise ValueError(f"MoE.forward: task ids must be in [0, {n - 1}], got "
                             f"min {int(task_ids.min())}, max {int(task_ids.max())}")
        tokens = math.prod(shape[:-1])
        if task_ids.numel() == tokens:
            return task_ids.reshape(-1)
        if len(shape) >= 2 and task_ids.dim() == 1 and task_ids.numel() == shape[0]:
            return task_ids.repeat_interleave(tokens // shape[0])
        if task_ids.numel() == 1:
            return task_ids.reshape(1).expand(tokens)
        raise ValueError(f"MoE.forward: task_ids must have one id per row ({shape[0]}) or per token "
                         f"({tokens}), got shape {tuple(task_ids.shape)}")


# --- Task-MoE: task context and sub-network extraction ---------------------------------------


@contextlib.contextmanager
def task_context(model: nn.Module, task_ids) -> Iterator[None]:
    """Give every Task-MoE layer inside `model` these task ids for the forwards in the block
    (for models such as `paretoml.models.GPT` whose FFN call takes only x)."""
    layers = [m for m in model.modules() if isinstance(m, MoE) and isinstance(m.router, TaskRouter)]
    if not layers:
        raise ValueError("task_context: the model has no MoE layer with a TaskRouter")
    for m in layers:
        m._task_ids = torch.as_tensor(task_ids)
    try:
        yield
    finally:
        for m in layers:
            m._task_ids = None


class TaskExperts(nn.Module):
    """The k experts one task uses, with their fixed gates: a dense FFN mixture that returns
    `MoEOutput` like the layer it replaces (aux loss 0)."""

    def __init__(self, moe: MoE, task_id: int):
        super().__init__()
        probs = moe.gate.detach().float()[task_id].softmax(-1)
        gate, expert = _topk_gates(probs[None], moe.router.k)
        # keep the experts in ascending id order: the full layer sums them in that order too
        idx = expert[0].sort()
        self.register_buffer("gates", gate[0][idx.indices].clone())
        self.experts = idx.values.tolist()
        self.w_up = nn.Parameter(moe.w_up.detach()[idx.values].clone())
        self.w_down = nn.Parameter(moe.w_down.detach()[idx.values].clone())
        self.d_model, self.num_experts = moe.d_model, moe.num_experts

    def forward(self, x: torch.Tensor, task_ids=None) -> MoEOutput:
        xt = x.reshape(-1, self.d_model)
        y = None
        for j in range(self.gates.numel()):  # k (1–2) experts, not a loop over tokens
            h = F.gelu(xt @ self.w_up[j].to(xt.dtype), approximate="tanh") @ self.w_down[j].to(xt.dtype)
            h = h * self.gates[j].to(h.dtype)
            y = h if y is None else y + h
        zero = torch.zeros((), device=x.device)
        return MoEOutput(y.view(x.shape), zero, {"experts": torch.tensor(self.experts)})


def extract_task_submodel(model: nn.Module, task_id: int) -> nn.Module:
    """A copy of `model` in which every Task-MoE layer keeps only task `task_id`'s experts.

    The copy needs no task ids, has ~E/k× fewer expert parameters and gives the same outputs
    as `model` run on task `task_id` (up to float rounding of a different summation order).
    `model` itself may be a single `MoE`.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, MoE) and isinstance(m.router, TaskRouter)]
    if not layers:
        raise ValueError("extract_task_submodel: the model has no MoE layer with a TaskRouter")
    n_tasks = layers[0][1].router.num_tasks
    if not isinstance(task_id, int) or not 0 <= task_id < n_tasks:
        raise ValueError(f"extract_task_submodel: task_id must be an int in [0, {n_tasks - 1}], got {task_id!r}")
    if any(m.world > 1 for _, m in layers):
        raise ValueError("extract_task_submodel: gather an expert-parallel model onto one rank first")
    if isinstance(model, MoE):
        return TaskExperts(model, task_id)
    sub = copy.deepcopy(model)
    for name, m in layers:
        parent_name, _, attr = name.rpartition(".")
        parent = sub.get_submodule(parent_name) if parent_name else sub
        setattr(parent, attr, TaskExperts(m, task_id))
    return sub


# --- `paretoml demo` variant --------------------------------------------------------------------


class _MoEClassifier(nn.Module):
    """Digits classifier whose hidden layer is a residual top-1 MoE (4 experts): (B, 64) → (B, 10)."""

    def __init__(self, in_features: int = 64, width: int = 32, num_experts: int = 4, num_classes: int = 10):
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.moe = MoE(width, width, num_experts, TopKRouter(k=1, capacity_factor=None))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        h = F.relu(self.inp(x))
        return self.head(h + self.moe(h).out)


def build_demo_variants(ctx) -> list:
    """`paretoml demo` builder: an MLP whose hidden layer is a 4-expert top-1 MoE."""
    from paretoml.demo import _torch_variant, _train

    torch.manual_seed(ctx.cfg.seed)
    model = _train(_MoEClassifier(), ctx, seed=ctx.cfg.seed)
    cfg = {"technique": "mixture of experts (top-1, dropless)", "hidden": 32, "experts": 4, "k": 1}
    return [_torch_variant("moe-mlp-h32-e4-top1", model, cfg)]
