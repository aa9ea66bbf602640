"""CALM early exit: exactness at threshold 1, exits and KV propagation, LTT calibration, bad input."""

import math

import pytest
import torch

from paretoml.infer import decode
from paretoml.infer import early_exit as ee
from paretoml.models.gpt import GPT, GPTConfig


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=13, n_layer=4, n_head=4, n_kv_head=2, n_embd=32, d_ff=64, block_size=64)
    m = GPT(GPTConfig.llama(**{**cfg, **kw})).double().eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(30)
    return m


def _prompts(n, V=13, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (length,), generator=g) for _ in range(n)]


def test_exit_heads_last_layer_is_the_model_head():
    m = _model()
    heads = ee.ExitHeads(m)
    h = torch.randn(2, 3, 32, dtype=torch.float64)
    ref = m.lm_head(m.ln_f(h))  # GPT's RMSNorm computes in float32: compare at that precision
    torch.testing.assert_close(heads.logits(m, 3, h), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(heads.logits(m, 0, h), ref, rtol=1e-5, atol=1e-5)  # initialised from ln_f
    assert len(heads.norms) == 3


def test_threshold_one_is_exactly_full_depth():
    m = _model()
    heads = ee.ExitHeads(m)
    prompts = _prompts(3)
    full = decode.generate(m, prompts, decode.DecodeConfig(max_new_tokens=12))
    res = ee.generate(m, heads, prompts, ee.EarlyExitConfig(threshold=1.0, max_new_tokens=12))
    assert torch.equal(res.tokens, full)
    assert res.mean_layers == 4.0 and res.layers_used.shape == (12,)


def test_threshold_zero_exits_at_the_first_tested_layer():
    m = _model()
    heads = ee.ExitHeads(m)
    # tau huge: λ_t = 0.1·e^{−τt/N} ≈ 0 for t ≥ 1, and the top-1 − top-2 margin is always >= 0
    cfg = ee.EarlyExitConfig(threshold=0.0, tau=1e6, min_layer=2, max_new_tokens=10)
    res = ee.generate(m, heads, _prompts(1), cfg)
    assert (res.layers_used[1:] == 2).all()
    cfg2 = ee.EarlyExitConfig(threshold=0.0, tau=1e6, min_layer=1, exit_every=3, max_new_tokens=10)
    assert (ee.generate(m, heads, _prompts(1), cfg2).layers_used[1:] == 3).all()


def test_write_kv_fills_skipped_layers_from_the_exit_state():
    m = _model()
    lm = decode.StaticLM(m, 1, 16)
    start = torch.tensor([3])
    ctx = lm.context(1, start)
    h = torch.randn(1, 1, 32, dtype=torch.float64)
    lm.write_kv(2, h, ctx)
    # reference: layer 2's key/value projections of ln_1(h), rotated at position 3 (keys only)
    blk, hs, nh, nkv = m.blocks[2], 8, 4, 2
    qkv = blk.attn.qkv(blk.ln_1(h)).view(1, 1, nh + 2 * nkv, hs)
    k, v = qkv[:, :, nh : nh + nkv].transpose(1, 2), qkv[:, :, nh + nkv :].transpose(1, 2)
    from paretoml.models.gpt import _rope

    k = _rope(k, *m.rope(3, 1))
    torch.testing.assert_close(lm.k[2, :, :, 3:4], k)
    torch.testing.assert_close(lm.v[2, :, :, 3:4], v)


def test_train_exit_heads_lowers_the_loss():
    m = _model()
    heads = ee.ExitHeads(m)
    data = torch.randint(0, 13, (3000,), generator=torch.Generator().manual_seed(0))
    losses = ee.train_exit_heads(m, heads, data, steps=25, batch_size=8, seq_len=32, lr=1e-2)
    assert losses[-1] < losses[0]
    assert all(p.requires_grad for p in m.parameters())  # the model is unfrozen afterwards


def test_calibrate_certifies_with_hoeffding_p_values():
    m = _model()
    heads = ee.ExitHeads(m)
    prompts = _prompts(30)
    cfg = ee.EarlyExitConfig(max_new_tokens=6)
    cal = ee.calibrate(m, heads, prompts, cfg, epsilon=0.3, delta=0.1, thresholds=[1.0, 0.0])
    # λ = 1 never exits: zero risk; Hoeffding–Bentkus at R̂ = 0 is (1 − ε)^n; certified at δ = 0.1
    assert cal.risks[0] == 0.0
    assert cal.p_values[0] == pytest.approx(0.7 ** 30)
    assert cal.mean_layers[0] == 4.0
    assert cal.threshold == (0.0 if cal.p_values[1] <= 0.1 else 1.0)
    with pytest.warns(UserWarning, match="no threshold certified"):
        bad = ee.calibrate(m, heads, prompts[:3], cfg, epsilon=0.05, delta=0.1, thresholds=[0.9])
    assert bad.threshold == 1.0


def test_hb_p_value_against_hoeffding_and_binomial():
    from scipy.stats import binom

    # never larger than the plain Hoeffding bound exp(−2n(ε − R̂)²) (the KL bound dominates it)
    for risk, n, eps in ((0.02, 200, 0.05), (0.0, 50, 0.1), (0.04, 1000, 0.05)):
        assert ee.hb_p_value(risk, n, eps) <= math.exp(-2 * n * (eps - risk) ** 2) + 1e-12
    # by hand: R̂ = 0.01, n = 100, ε = 0.05 → min(exp(−n·KL(0.01 ‖ 0.05)), e·P(Bin(100, .05) <= 1))
    kl = 0.01 * math.log(0.01 / 0.05) + 0.99 * math.log(0.99 / 0.95)
    bentkus = math.e * (0.95 ** 100 + 100 * 0.05 * 0.95 ** 99)
    assert ee.hb_p_value(0.01, 100, 0.05) == pytest.approx(min(math.exp(-100 * kl), bentkus))
    assert binom.cdf(1, 100, 0.05) == pytest.approx(0.95 ** 100 + 5 * 0.95 ** 99)
    assert ee.hb_p_value(0.2, 100, 0.05) == 1.0  # risk above ε: nothing to certify


@pytest.mark.parametrize("kw, field", [
    (dict(threshold=1.5), "threshold"), (dict(measure="entropy"), "measure"), (dict(tau=-1.0), "tau"),
    (dict(min_layer=0), "min_layer"), (dict(exit_every=0), "exit_every"), (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_early_exit_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        ee.EarlyExitConfig(**kw)


def test_early_exit_bad_input():
    m, other = _model(), _model(n_layer=3)
    heads = ee.ExitHeads(m)
    with pytest.raises(ValueError, match="ExitHeads built for this model"):
        ee.generate(other, heads, _prompts(1))
    with pytest.raises(TypeError, match="paretoml GPT"):
        ee.generate(torch.nn.Linear(2, 2), heads, _prompts(1))
    with pytest.raises(TypeError, match="paretoml GPT"):
        ee.ExitHeads(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="exceed the model's context"):
        ee.generate(m, heads, [torch.zeros(60, dtype=torch.long)], ee.EarlyExitConfig(max_new_tokens=10))
    with pytest.raises(ValueError, match="epsilon"):
        ee.calibrate(m, heads, _prompts(2), epsilon=0.0)
    with pytest.raises(ValueError, match="delta"):
        ee.calibrate(m, heads, _prompts(2), delta=1.0)
    with pytest.raises(ValueError, match="thresholds"):
        ee.calibrate(m, heads, _prompts(2), thresholds=[2.0])
    with pytest.raises(ValueError, match="1-D token tensor"):
        ee.train_exit_heads(m, heads, torch.zeros(10, dtype=torch.long), seq_len=32)
