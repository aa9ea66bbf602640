"""paretoml.arch.moe: routing semantics on hand-checked cases, dispatch parity with a per-token
reference, gradients, losses, Task-MoE extraction, causal decoding with expert choice, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from paretoml.arch.moe import (
    BatchPriorityRouter,
    ExpertChoiceRouter,
    MoE,
    TaskRouter,
    TopKRouter,
    extract_task_submodel,
    task_context,
)
from paretoml.models.gpt import GPT, GPTConfig

ROUTERS = [TopKRouter(k=2, capacity_factor=None), TopKRouter(k=2, capacity_factor=0.75),
           TopKRouter(k=1, capacity_factor=1.0), BatchPriorityRouter(k=2, capacity_ratio=0.5),
           ExpertChoiceRouter(capacity_factor=2.0)]


def _steered(router, E=2, scale=10.0, backend="loop", dtype=torch.float64):
    """An MoE whose router logits equal scale * x (d_model = E, gate = identity), so a test
    writes each token's preferences straight into its input."""
    torch.manual_seed(0)
    moe = MoE(E, 8, E, router, backend=backend, balance_weight=0.0, z_loss_weight=0.0).to(dtype)
    with torch.no_grad():
        moe.gate.copy_(torch.eye(E) * scale)
    return moe


def _probs(x, scale):
    """Router probabilities as the layer computes them (float64 inputs: in float64)."""
    return torch.softmax(scale * x, -1)


def _ffn(moe, e, x):
    return F.gelu(x @ moe.w_up[e].to(x.dtype), approximate="tanh") @ moe.w_down[e].to(x.dtype)


def _routed(moe, x):
    """{(token, expert)} pairs of the plan."""
    plan, _, _ = moe._route(x, None)
    experts = torch.repeat_interleave(torch.arange(moe.num_experts), plan.counts)
    return sorted(zip(plan.src.tolist(), experts.tolist())), plan


def _reference(moe, x, pairs_weights):
    y = torch.zeros_like(x)
    for t, e, w in pairs_weights:
        y[t] += w * _ffn(moe, e, x[t])
    return y


# --- routing semantics ---------------------------------------------------------------------


def test_topk_capacity_keeps_first_tokens_and_drops_the_rest():
    moe = _steered(TopKRouter(k=1, capacity_factor=0.5))  # C = ceil(0.5 * 4 * 1 / 2) = 1
    x = torch.tensor([[1.0, 0.0], [0.9, 0.0], [1.2, 0.0], [0.0, 1.0]], dtype=torch.float64)
    pairs, plan = _routed(moe, x)
    assert pairs == [(0, 0), (3, 1)]  # expert 0 keeps token 0 (first in order); 1 and 2 dropped
    assert int(plan.dropped_tokens) == 2 and int(plan.dropped_assignments) == 2
    out = moe(x)
    assert out.out[1].abs().max() == 0 and out.out[2].abs().max() == 0  # skip the layer
    p = _probs(x, 10.0)
    ref = _reference(moe, x, [(0, 0, p[0, 0]), (3, 1, p[3, 1])])  # Switch: gate = raw probability
    torch.testing.assert_close(out.out, ref)
    assert out.stats["load"].tolist() == [1, 1] and int(out.stats["dropped_tokens"]) == 2


def test_bpr_keeps_the_most_confident_token():
    moe = _steered(BatchPriorityRouter(k=1, capacity_ratio=0.5))
    x = torch.tensor([[1.0, 0.0], [0.9, 0.0], [1.2, 0.0], [0.0, 1.0]], dtype=torch.float64)
    pairs, plan = _routed(moe, x)
    assert pairs == [(2, 0), (3, 1)]  # token 2 has the largest routing weight for expert 0
    assert int(plan.dropped_tokens) == 2


def test_top2_fills_all_first_choices_before_second_choices():
    # C = ceil(0.5 * 3 * 2 / 2) = 2. Token 0 prefers expert 1; tokens 1, 2 prefer expert 0.
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    moe = _steered(TopKRouter(k=2, capacity_factor=0.5))
    pairs, plan = _routed(moe, x)
    # expert 0: first choices of tokens 1, 2 fill it, token 0's second choice is dropped;
    # expert 1: token 0 (first choice), then token 1's second choice; token 2's is dropped.
    assert pairs == [(0, 1), (1, 0), (1, 1), (2, 0)]
    assert int(plan.dropped_assignments) == 2 and int(plan.dropped_tokens) == 0
    # BPR on other inputs: vanilla would give [(0, 1), (1, 0), (1, 1), (2, 0)] here.
    moe_bpr = _steered(BatchPriorityRouter(k=2, capacity_ratio=0.5))
    x2 = torch.tensor([[0.0, 1.0], [0.3, 0.0], [1.0, 0.0]], dtype=torch.float64)
    pairs, _ = _routed(moe_bpr, x2)
    # priorities: token 0: 0.99995, token 2: 0.99995, token 1: 0.95 → order 0, 2, 1.
    # expert 0 first choices: tokens 2, 1; expert 1: token 0, then second choices in priority
    # order: token 2 (kept, second slot), token 1 dropped; token 0's second choice (e0) dropped.
    assert pairs == [(0, 1), (1, 0), (2, 0), (2, 1)]


def test_top2_gates_are_renormalised_and_output_matches_reference():
    moe = _steered(TopKRouter(k=2, capacity_factor=None), E=3, scale=1.0)
    x = torch.randn(5, 3, dtype=torch.float64)
    p = _probs(x, 1.0)
    g, e = p.topk(2, -1)
    g = g / g.sum(-1, keepdim=True)
    ref = _reference(moe, x, [(t, int(e[t, j]), g[t, j]) for t in range(5) for j in range(2)])
    torch.testing.assert_close(moe(x).out, ref)


def test_expert_choice_each_expert_takes_its_top_tokens():
    moe = _steered(ExpertChoiceRouter(capacity_factor=1.0))  # cap = ceil(4 * 1 / 2) = 2 each
    moe.train()
    x = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    pairs, plan = _routed(moe, x)
    # probs of expert 0: 1.0, 0.99995, 0.5, ~0 → tokens 0, 1; expert 1: token 3, then token 2
    assert pairs == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert plan.counts.tolist() == [2, 2]
    x = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    pairs, plan = _routed(moe, x)
    # expert 1 prefers the tokens with the smallest x0: 3, then 2
    assert pairs == [(0, 0), (1, 0), (2, 1), (3, 1)]
    # cap 1: two tokens get no expert (scale 1: distinct fp32 router probabilities)
    moe2 = _steered(ExpertChoiceRouter(capacity_factor=0.5), scale=1.0)
    moe2.train()
    _, plan = _routed(moe2, x)
    assert int(plan.dropped_tokens) == 2 and plan.counts.tolist() == [1, 1]
    out = moe2(x)
    p = _probs(x, 1.0)
    torch.testing.assert_close(out.out, _reference(moe2, x, [(0, 0, p[0, 0]), (3, 1, p[3, 1])]))
    assert float(out.stats["balance_loss"]) == 0.0


def test_task_router_sends_every_token_of_a_task_to_its_experts():
    torch.manual_seed(0)
    moe = MoE(8, 16, 4, TaskRouter(num_tasks=3, k=2)).double()
    with torch.no_grad():
        moe.gate.copy_(torch.tensor([[3.0, 2, 0, 0], [0, 0, 1, 4], [0, 5, 0, 1]]))
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    plan, _, _ = moe._route(x.reshape(-1, 8), moe._token_task_ids(torch.tensor([0, 1, 2]), x.shape))
    experts = torch.repeat_interleave(torch.arange(4), plan.counts)
    got = {(int(t) // 5, int(e)) for t, e in zip(plan.src, experts)}
    assert got == {(0, 0), (0, 1), (1, 3), (1, 2), (2, 1), (2, 3)}


# --- dispatch parity, gradients -------------------------------------------------------------


@pytest.mark.parametrize("router", ROUTERS, ids=str)
def test_dispatch_backends_match_per_token_reference(router):
    torch.manual_seed(1)
    moe = MoE(12, 24, 4, router, backend="padded").double().train()
    x = torch.randn(3, 7, 12, dtype=torch.float64)
    pairs, plan = _routed(moe, x.reshape(-1, 12))
    experts = torch.repeat_interleave(torch.arange(4), plan.counts)
    ref = _reference(moe, x.reshape(-1, 12), [(int(t), int(e), w) for t, e, w in zip(plan.src, experts, plan.weight)])
    for backend in ("padded", "loop"):
        moe.backend = backend
        torch.testing.assert_close(moe(x).out.reshape(-1, 12), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="no grouped_mm in this torch")
def test_grouped_backend_forward_matches_loop_on_cpu():
    torch.manual_seed(2)
    moe = MoE(16, 32, 4, TopKRouter(k=2, capacity_factor=None), backend="loop")
    x = torch.randn(40, 16)
    ref = moe(x).out
    moe.backend = "grouped"
    with torch.no_grad():
        try:
            out = moe(x).out
        except RuntimeError as e:  # a build whose CPU grouped_mm does not take fp32
            pytest.skip(f"CPU grouped_mm unavailable: {e}")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("router", [ROUTERS[0], ROUTERS[3]], ids=str)
def test_custom_dispatch_gradients_pass_gradcheck(router):
    from torch.func import functional_call

    torch.manual_seed(3)
    moe = MoE(4, 4, 3, router, backend="padded").double().train()
    args = tuple(t.detach().clone().requires_grad_() for t in
                 (torch.randn(8, 4, dtype=torch.float64), moe.gate, moe.w_up, moe.w_down))

    def f(x, g, u, d):
        res = functional_call(moe, {"gate": g, "w_up": u, "w_down": d}, (x,))
        return res.out, res.aux_loss

    # routing is piecewise constant; gradcheck's 1e-6 steps do not flip it on random data
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradients_reach_router_and_every_used_expert():
    torch.manual_seed(4)
    moe = MoE(16, 32, 4, TopKRouter(k=2, capacity_factor=None))
    x = torch.randn(64, 16, requires_grad=True)
    res = moe(x)
    (res.out.pow(2).sum() + res.aux_loss).backward()
    assert moe.gate.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    used = res.stats["load"] > 0
    assert (moe.w_up.grad.flatten(1).abs().sum(1)[used] > 0).all()


# --- auxiliary losses -------------------------------------------------------------------------


def test_balance_loss_on_known_cases():
    E = 2
    moe = _steered(TopKRouter(k=1, capacity_factor=None), E=E, scale=1.0)
    # every token's top-1 is expert 0: f = (1, 0), P = mean probs → loss = E * P_0
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    p0 = torch.softmax(x, -1)[:, 0].mean()
    assert math.isclose(float(moe(x).stats["balance_loss"]), E * float(p0), rel_tol=1e-9)
    # uniform routing: f = P = 1/E → loss = 1 (its minimum)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert math.isclose(float(moe(x).stats["balance_loss"]), 1.0, rel_tol=1e-9)


def test_z_loss_and_weighted_aux_loss():
    moe = _steered(TopKRouter(k=1, capacity_factor=None), E=4, scale=1.0)
    moe.balance_weight, moe.z_loss_weight = 0.5, 0.25
    x = torch.zeros(3, 4, dtype=torch.float64)  # logits 0: logsumexp = log 4
    res = moe(x)
    assert math.isclose(float(res.stats["z_loss"]), math.log(4) ** 2, rel_tol=1e-9)
    assert math.isclose(res.aux_loss.item(), 0.5 * float(res.stats["balance_loss"]) + 0.25 * math.log(4) ** 2,
                        rel_tol=1e-9)


@pytest.mark.parametrize("router", ROUTERS, ids=str)
def test_aux_loss_finite_with_no_tokens_and_empty_experts(router):
    moe = MoE(8, 16, 4, router).train()
    res = moe(torch.zeros(0, 8))
    assert res.out.shape == (0, 8) and torch.isfinite(res.aux_loss)
    with torch.no_grad():
        moe.gate.zero_()
        moe.gate[0, 0] = 100.0  # most tokens pile onto expert 0; the others stay empty
    res = moe(torch.rand(16, 8) + 1)
    assert torch.isfinite(res.aux_loss) and torch.isfinite(res.out).all()


# --- GPT integration: aux losses, expert choice decoding, Task-MoE extraction ----------------


def _gpt(router, E=4, d=32):
    torch.manual_seed(5)
    cfg = GPTConfig(vocab_size=20, n_layer=2, n_head=2, n_embd=d, block_size=32)
    return GPT(cfg, ffn_factory=lambda i, c: MoE(d, 2 * d, E, router))


def test_gpt_sums_moe_aux_losses():
    model = _gpt(TopKRouter(k=2))
    seen = []
    for blk in model.blocks:
        blk.ffn.register_forward_hook(lambda mod, inp, out: seen.append(out.aux_loss))
    idx = torch.randint(0, 20, (2, 16))
    out = model(idx, idx)
    assert len(seen) == 2 and out.aux_loss.item() > 0
    assert math.isclose(out.aux_loss.item(), (seen[0] + seen[1]).item(), rel_tol=1e-6)


def test_expert_choice_eval_is_causal_so_kv_decoding_matches_full_forward():
    model = _gpt(ExpertChoiceRouter(capacity_factor=2.0)).eval()
    idx = torch.randint(0, 20, (3, 12))
    with torch.no_grad():
        full = model(idx).logits
        cache = model.new_cache(3, 12)
        steps = [model(idx[:, :5], cache=cache).logits[:, -1]]
        for t in range(5, 12):
            steps.append(model(idx[:, t:t + 1], cache=cache).logits[:, -1])
        # and one sequence alone gives the same logits as inside the batch
        alone = model(idx[1:2]).logits
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 4:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, full[1:2], rtol=1e-5, atol=1e-5)


def test_task_submodel_is_exact_and_smaller():
    E, k = 6, 2
    model = _gpt(TaskRouter(num_tasks=3, k=k), E=E).eval()
    idx = torch.randint(0, 20, (4, 16))
    n_full = sum(p.numel() for p in model.parameters())
    for t in range(3):
        sub = extract_task_submodel(model, t)
        with torch.no_grad(), task_context(model, torch.full((4,), t)):
            ref = model(idx).logits
        with torch.no_grad():
            got = sub(idx).logits
        assert float((ref - got).abs().max()) <= 1e-6
        expert_params = 2 * 32 * 64  # per expert, per layer
        assert n_full - sum(p.numel() for p in sub.parameters()) == 2 * (E - k) * expert_params + 2 * 3 * E
    # a single layer extracts too
    moe = MoE(8, 16, 4, TaskRouter(num_tasks=2, k=1))
    x = torch.randn(5, 8)
    torch.testing.assert_close(extract_task_submodel(moe, 1)(x).out, moe(x, task_ids=torch.ones(5, dtype=torch.long)).out)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("make, field", [
    (lambda: TopKRouter(k=0), "TopKRouter.k"),
    (lambda: TopKRouter(capacity_factor=0), "TopKRouter.capacity_factor"),
    (lambda: TopKRouter(capacity_factor=-1.0), "TopKRouter.capacity_factor"),
    (lambda: TopKRouter(jitter=1.5), "TopKRouter.jitter"),
    (lambda: BatchPriorityRouter(capacity_ratio=0.0), "BatchPriorityRouter.capacity_ratio"),
    (lambda: BatchPriorityRouter(k=1.5), "BatchPriorityRouter.k"),
    (lambda: ExpertChoiceRouter(capacity_factor=0), "ExpertChoiceRouter.capacity_factor"),
    (lambda: ExpertChoiceRouter(eval_mode="causal"), "ExpertChoiceRouter.eval_mode"),
    (lambda: TaskRouter(num_tasks=0), "TaskRouter.num_tasks"),
    (lambda: TaskRouter(k=0), "TaskRouter.k"),
])
def test_router_configs_reject_bad_values(make, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make()


def test_moe_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k=3 exceeds num_experts=2"):
        MoE(8, 16, 2, TopKRouter(k=3))
    with pytest.raises(ValueError, match="num_experts"):
        MoE(8, 16, 0)
    with pytest.raises(TypeError, match="router must be"):
        MoE(8, 16, 2, router="top2")
    with pytest.raises(ValueError, match="backend"):
        MoE(8, 16, 2, backend="cuda")
    with pytest.raises(ValueError, match="balance_weight"):
        MoE(8, 16, 2, balance_weight=-1.0)
    with pytest.raises(ValueError, match="dispatch must be one of"):
        MoE(8, 16, 2, dispatch="triton")


def test_fused_dispatch_refuses_what_it_cannot_run():
    """dispatch='fused' is a promise: without CUDA (or triton), or with a router it does not
    cover, the layer says what is missing instead of silently taking the torch path."""
    import os

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the Triton interpreter runs the fused path on the CPU")
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="dispatch='fused' needs a non-empty CUDA"):
        MoE(8, 16, 2, TopKRouter(k=1), dispatch="fused")(x)
    with pytest.raises(ValueError, match="dispatch='fused' needs a TopKRouter"):
        MoE(8, 16, 2, ExpertChoiceRouter(), dispatch="fused")(x)
    jitter = MoE(8, 16, 2, TopKRouter(k=1, jitter=0.1), dispatch="fused").train()
    with pytest.raises(ValueError, match="without jitter in training"):
        jitter(x)
    ep = MoE(8, 16, 2, TopKRouter(k=1), dispatch="fused")
    ep.world = 2  # as a process_group of two ranks sets it: expert parallelism keeps the torch path
    with pytest.raises(ValueError, match=r"no expert parallelism.*got router TopKRouter, 2 expert-parallel rank"):
        ep(x)
    # 'auto' falls back quietly on the CPU: same numbers as 'torch'
    torch.manual_seed(0)
    m = MoE(8, 16, 4, TopKRouter(k=2))
    a = m(x).out
    m.dispatch = "torch"
    torch.testing.assert_close(m(x).out, a, rtol=0, atol=0)


def test_forward_rejects_bad_input():
    moe = MoE(8, 16, 4, TopKRouter(k=2))
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., 8\), got \(3, 7\)"):
        moe(torch.randn(3, 7))
    with pytest.raises(ValueError, match="not finite"):
        moe(torch.full((2, 8), float("nan")))
    tmoe = MoE(8, 16, 4, TaskRouter(num_tasks=2, k=1))
    with pytest.raises(ValueError, match=r"task ids must be in \[0, 1\]"):
        tmoe(torch.randn(3, 8), task_ids=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="needs task_ids"):
        tmoe(torch.randn(3, 8))
    with pytest.raises(ValueError, match="one id per row"):
        tmoe(torch.randn(2, 3, 8), task_ids=torch.tensor([0, 1, 1, 0]))
    ec = MoE(8, 16, 4, ExpertChoiceRouter(eval_mode="batch")).eval()
    with pytest.raises(ValueError, match="not causal"):
        ec(torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="has no MoE layer with a TaskRouter"):
        with task_context(moe, [0]):
            pass
    with pytest.raises(ValueError, match="has no MoE layer with a TaskRouter"):
        extract_task_submodel(moe, 0)
    with pytest.raises(ValueError, match=r"task_id must be an int in \[0, 1\]"):
        extract_task_submodel(tmoe, 2)


def test_grouped_backend_without_grouped_mm_says_so(monkeypatch):
    import paretoml.arch.moe as m

    monkeypatch.setattr(m, "grouped_mm_fn", lambda: None)
    moe = MoE(8, 16, 2, TopKRouter(k=1, capacity_factor=None), backend="grouped")
    with pytest.raises(RuntimeError, match="no grouped_mm"):
        moe(torch.randn(4, 8))
