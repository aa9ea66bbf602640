"""Expert parallelism: 2 gloo processes on CPU, each holding half the experts, give the same
outputs and expert gradients as one process holding all of them."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from paretoml.arch.moe import MoE, TopKRouter

D, H, E, T = 8, 16, 4, 12


def _inputs(rank):
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(T, D, generator=g, dtype=torch.float64), torch.randn(T, D, generator=g, dtype=torch.float64)


def _worker(rank, world, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        full = MoE(D, H, E, TopKRouter(k=2, capacity_factor=None)).double()
        ep = MoE(D, H, E, TopKRouter(k=2, capacity_factor=None), process_group=dist.group.WORLD).double()
        el = E // world
        with torch.no_grad():
            ep.gate.copy_(full.gate)
            ep.w_up.copy_(full.w_up[rank * el:(rank + 1) * el])
            ep.w_down.copy_(full.w_down[rank * el:(rank + 1) * el])
        x, c = _inputs(rank)
        x.requires_grad_()
        out = ep(x)
        (out.out * c).sum().backward()
        # reference: one process, all experts, both ranks' tokens, the summed loss
        xs, cs = zip(*(_inputs(r) for r in range(world)))
        xa = torch.cat(xs).requires_grad_()
        ref = torch.cat([full(xi).out for xi in xa.split(T)])
        (ref * torch.cat(cs)).sum().backward()
        torch.testing.assert_close(out.out, ref[rank * T:(rank + 1) * T], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x.grad, xa.grad[rank * T:(rank + 1) * T], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ep.w_up.grad, full.w_up.grad[rank * el:(rank + 1) * el], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ep.w_down.grad, full.w_down.grad[rank * el:(rank + 1) * el], rtol=1e-10, atol=1e-10)
        # the router is replicated: its local gradient covers this rank's tokens only
        assert ep.gate.grad is not None and torch.isfinite(ep.gate.grad).all()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_expert_parallel_all_to_all_matches_single_process(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


def test_expert_parallel_rejects_uneven_split(monkeypatch):
    # MoE asks the group for its size and rank only; pretend to be rank 0 of 2
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    with pytest.raises(ValueError, match="must divide evenly over 2 ranks"):
        MoE(8, 16, 3, TopKRouter(k=1), process_group=object())
