"""DistillSpec: divergences against independent formulas, and distillation raising acceptance."""

import math

import pytest
import torch
import torch.nn.functional as F

from paretoml.infer import distill
from paretoml.infer import speculative as sp
from paretoml.models.gpt import GPT, GPTConfig


pytestmark = pytest.mark.usefixtures("one_thread")


def test_divergences_match_definitions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    p, q = a.softmax(-1), b.softmax(-1)
    fkl = F.kl_div(q.log(), p, reduction="none").sum(-1).mean()  # torch's KL(p || q)
    rkl = F.kl_div(p.log(), q, reduction="none").sum(-1).mean()
    m = (p + q) / 2
    jsd = (0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)).mean()
    tvd = (0.5 * (p - q).abs().sum(-1)).mean()
    for kind, ref in (("fkl", fkl), ("rkl", rkl), ("jsd", jsd), ("tvd", tvd)):
        assert float(distill.divergence(kind, a, b)) == pytest.approx(float(ref), rel=1e-5)
    for kind in ("fkl", "rkl", "jsd", "tvd"):
        assert float(distill.divergence(kind, a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill.divergence("jsd", a * 50, b * 50)) <= math.log(2) + 1e-6  # JSD is bounded by ln 2


def test_divergences_toward_the_argmax_at_temperature_zero():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 9, generator=g, dtype=torch.float64), torch.randn(6, 9, generator=g, dtype=torch.float64)
    q, top = b.softmax(-1), a.argmax(-1)
    ce = F.cross_entropy(b, top)  # KL(one-hot ‖ q) is the cross-entropy on the argmax
    assert float(distill.divergence("fkl", a, b, 0.0)) == pytest.approx(float(ce), rel=1e-4)
    tv = (0.5 * (F.one_hot(top, 9).double() - q).abs().sum(-1)).mean()
    assert float(distill.divergence("tvd", a, b, 0.0)) == pytest.approx(float(tv), rel=1e-6)
    # a low temperature approaches the one-hot; temperature 1 is the plain softmax
    assert float(distill.divergence("fkl", a, b, 1e-3)) == pytest.approx(float(ce), rel=1e-4)
    p = a.softmax(-1)
    assert float(distill.divergence("fkl", a * 2, b, 2.0)) == pytest.approx(float((p * (p.log() - q.log())).sum(-1).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="infinite"):
        distill.divergence("jsd", a, b, 0.0)


def _peaked_pair():
    """A 2-layer target with a sharpened LM head, an untrained 1-layer draft, data and prompts."""
    torch.manual_seed(0)
    V = 11
    target = GPT(GPTConfig.llama(vocab_size=V, n_layer=2, n_head=2, n_embd=32, d_ff=64, block_size=64)).eval()
    with torch.no_grad():
        target.lm_head.weight.mul_(20)
    draft = GPT(GPTConfig.llama(vocab_size=V, n_layer=1, n_head=2, n_embd=16, d_ff=32, block_size=64)).eval()
    data = torch.randint(0, V, (2000,), generator=torch.Generator().manual_seed(1))
    prompts = data[:400].view(50, 8)
    return target, draft, data, prompts


def test_greedy_distillation_raises_greedy_acceptance():
    target, draft, data, prompts = _peaked_pair()
    cfg = sp.SpeculativeConfig(gamma=3, max_new_tokens=16)
    before = sp.generate(target, draft, prompts, cfg).acceptance_rate
    res = distill.distill_draft(target, draft, data, distill.DistillSpecConfig(
        divergence="fkl", target_temperature=0.0, sample_temperature=0.0, sample_model="target",
        on_policy_fraction=0.75, steps=60, batch_size=16, prompt_len=8, gen_len=16, lr=3e-3))
    after = sp.generate(target, draft, prompts, cfg).acceptance_rate
    assert res.losses[-1] < res.losses[0]
    assert after > before + 0.1, (before, after)  # greedy α = agreement with the target's argmax


def test_distill_draft_raises_acceptance_rate():
    target, draft, data, prompts = _peaked_pair()
    cfg = sp.SpeculativeConfig(gamma=3, max_new_tokens=16, temperature=1.0)
    before = sp.generate(target, draft, prompts, cfg, generator=torch.Generator().manual_seed(2)).acceptance_rate
    res = distill.distill_draft(target, draft, data, distill.DistillSpecConfig(
        divergence="tvd", on_policy_fraction=0.5, steps=60, batch_size=16, prompt_len=8, gen_len=16, lr=3e-3))
    after = sp.generate(target, draft, prompts, cfg, generator=torch.Generator().manual_seed(2)).acceptance_rate
    assert len(res.losses) == 60 and res.losses[-1] < res.losses[0]
    assert after > before + 0.1, (before, after)  # α = 1 − E[TV]: distilling on TV raises it


@pytest.mark.parametrize("kw, field", [
    (dict(divergence="kl"), "divergence"), (dict(on_policy_fraction=1.5), "on_policy_fraction"),
    (dict(steps=0), "steps"), (dict(lr=0.0), "lr"), (dict(sample_temperature=-1.0), "sample_temperature"),
    (dict(target_temperature=-0.5), "target_temperature"), (dict(sample_model="teacher"), "sample_model"),
    (dict(divergence="rkl", target_temperature=0.0), "target_temperature = 0"),
])
def test_distillspec_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        distill.DistillSpecConfig(**kw)


def test_distill_draft_bad_input():
    t = GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=16, block_size=64))
    d = GPT(GPTConfig(vocab_size=12, n_layer=1, n_head=2, n_embd=16, block_size=64))
    data = torch.randint(0, 11, (500,))
    cfg = distill.DistillSpecConfig(steps=1, prompt_len=4, gen_len=4)
    with pytest.raises(ValueError, match="vocabulary"):
        distill.distill_draft(t, d, data, cfg)
    with pytest.raises(TypeError, match="draft must be a paretoml GPT"):
        distill.distill_draft(t, torch.nn.Linear(2, 2), data, cfg)
    with pytest.raises(ValueError, match="1-D token tensor"):
        distill.distill_draft(t, t, data[:5], cfg)
    with pytest.raises(ValueError, match="block_size"):
        distill.distill_draft(t, t, data, distill.DistillSpecConfig(steps=1, prompt_len=40, gen_len=40))
    with pytest.raises(ValueError, match="kind must be one of"):
        distill.divergence("kl", torch.zeros(2, 3), torch.zeros(2, 3))
