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
    assert res.mean_layers == 4.0 and res.layers_used.shape == (3, 12)


def test_threshold_zero_exits_at_the_first_tested_layer():
    m = _model()
    heads = ee.ExitHeads(m)
    # tau huge: λ_t = 0.1·e^{−τt/N} ≈ 0 for t ≥ 1, and the top-1 − top-2 margin is always >= 0
    cfg = ee.EarlyExitConfig(threshold=0.0, tau=1e6, min_layer=2, max_new_tokens=10)
    res = ee.generate(m, heads, _prompts(1), cfg)
    assert (res.layers_used[:, 1:] == 2).all()
    cfg2 = ee.EarlyExitConfig(threshold=0.0, tau=1e6, min_layer=1, exit_every=3, max_new_tokens=10)
    assert (ee.generate(m, heads, _prompts(1), cfg2).layers_used[:, 1:] == 3).all()


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


def test_fused_kv_fill_equals_per_layer_write_kv():
    for kw in ({}, dict(pos="learned", norm="layernorm", mlp="gelu", bias=True)):  # Llama and GPT-2 parts
        m = _model(**kw)
        with torch.no_grad():  # non-trivial norm weights (and biases)
            for blk in m.blocks:
                blk.ln_1.weight.uniform_(0.5, 1.5)
                if getattr(blk.ln_1, "bias", None) is not None:
                    blk.ln_1.bias.uniform_(-0.2, 0.2)
        a, b = decode.StaticLM(m, 2, 16), decode.StaticLM(m, 2, 16)
        ctx = a.context(1, torch.tensor([3, 7]))
        h = torch.randn(2, 1, 32, dtype=torch.float64)
        ee._KVFill(a)(0, h, ctx)
        for j in range(1, 4):
            b.write_kv(j, h, ctx)
        torch.testing.assert_close(a.k, b.k, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.v, b.v, rtol=1e-10, atol=1e-12)
        assert a.k[0].abs().sum() == 0 and a.k[1:, 0, :, 3].abs().sum() > 0  # layer 0 untouched, 1.. written


def _exiting(m, heads):
    """A threshold at which some tokens exit early and others not (this model's margins spread
    over [0, 1], median ~0.6); tau = 0: λ_t = 0.9·0.8 + 0.1 at every step."""
    return ee.EarlyExitConfig(threshold=0.8, tau=0.0, min_layer=1, exit_every=1, max_new_tokens=12)


def test_per_row_batched_exits_equal_one_row_at_a_time():
    m = _model()
    heads = ee.ExitHeads(m)
    cfg = _exiting(m, heads)
    prompts = _prompts(5, length=6) + [torch.tensor([1, 2, 3])]  # a shorter prompt: right padding
    batched = ee.generate(m, heads, prompts, cfg)
    lay = []
    for i, p in enumerate(prompts):
        one = ee.generate(m, heads, [p], cfg)  # the graphed runner path (eager on the CPU)
        assert torch.equal(batched.tokens[i], one.tokens[0])
        assert torch.equal(batched.layers_used[i], one.layers_used[0])
        lay.append(one.layers_used)
    used = torch.cat(lay)
    assert (used < 4).any() and (used == 4).any(), used  # the test exercises exits and full depth
    assert batched.mean_layers == pytest.approx(float(used.mean()))


def test_exit_loss_is_the_weighted_per_layer_lm_loss():
    m = _model()
    heads = ee.ExitHeads(m)
    x = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(4))
    loss, per = ee.exit_loss(m, heads, x, y)
    hs = ee._hidden_states(m, x)
    with torch.no_grad():
        ref = [torch.nn.functional.cross_entropy(heads.logits(m, i, hs[i]).flatten(0, 1), y.flatten()) for i in range(4)]
    per = per.tolist()
    assert per == pytest.approx([float(r) for r in ref], rel=1e-6)
    assert float(loss.detach()) == pytest.approx(sum((i + 1) / 10 * float(r) for i, r in enumerate(ref)), rel=1e-6)
    assert per[-1] == pytest.approx(float(m(x, y).loss.detach()), rel=1e-6)  # the last exit is the model itself
    assert ee.exit_weights(4).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="one entry per layer"):
        ee.exit_loss(m, heads, x, y, weights=[1.0, 1.0])


def test_simulated_exits_in_training_match_state_propagation_at_decoding():
    m = _model()
    x = torch.randint(0, 13, (1, 9), generator=torch.Generator().manual_seed(5))
    t, e = 6, 1  # token 6 exits after layer 1 (0-based): layers 2, 3 get its K/V from the exit state
    exits = torch.full_like(x, 3)
    exits[0, t] = e
    with torch.no_grad():
        hs = list(ee._forward_states(m, x, exits))
        plain = list(ee._forward_states(m, x))
        ref = m.lm_head(m.ln_f(hs[-1]))[0, t + 1]
        # decoding: full prefill of 0..5, token 6 through layers 0..1 then K/V fill, token 7 at full depth
        lm = decode.StaticLM(m, 1, 16)
        lm.forward(x[:, :t], torch.tensor([0]))
        ctx = lm.context(1, torch.tensor([t]))
        h = lm.embed(x[:, t : t + 1], ctx)
        for i in range(e + 1):
            h = lm.block(i, h, ctx)
        ee._KVFill(lm)(e, h, ctx)
        got = lm.forward(x[:, t + 1 : t + 2], torch.tensor([t + 1]))[0, 0]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)  # GPT.RMSNorm rounds to float32
    assert not torch.allclose(ref, m.lm_head(m.ln_f(plain[-1]))[0, t + 1])  # propagation changed it
    # no exits: the model's own forward
    torch.testing.assert_close(plain[-1], list(ee._forward_states(m, x, torch.full_like(x, 3)))[-1])
    ex = ee.random_exits((4, 50), 4, ee.EarlyExitConfig(min_layer=1, exit_every=2), 0.5, torch.Generator().manual_seed(0))
    assert set(ex.unique().tolist()) == {1, 3} and 0.3 < float((ex == 1).float().mean()) < 0.7
    with pytest.raises(ValueError, match="shape of x"):
        ee.exit_loss(m, ee.ExitHeads(m), x, x, exits=ex)


def test_finetune_with_exits_makes_early_layers_predictive():
    m = _model().float()
    heads = ee.ExitHeads(m)
    data = torch.arange(3000) % 13  # a deterministic cycle: every layer can learn it
    x, y = data[:64].view(2, 32), data[1:65].view(2, 32)
    before = ee.exit_loss(m, heads, x, y)[1].tolist()
    w0 = m.blocks[0].attn.qkv.weight.detach().clone()
    losses = ee.train_exit_heads(m, heads, data, steps=30, batch_size=8, seq_len=32, lr=1e-2, finetune_model=True)
    after = ee.exit_loss(m, heads, x, y)[1].tolist()
    assert losses[-1] < losses[0]
    assert after[0] < before[0] - 1.0, (before, after)  # the first exit learned, not only the last
    assert not torch.equal(m.blocks[0].attn.qkv.weight, w0)  # the model itself was trained


def test_exit_classifiers_learn_which_exits_agree_with_full_depth():
    m = _model()
    heads = ee.ExitHeads(m)
    data = torch.randint(0, 13, (3000,), generator=torch.Generator().manual_seed(0))
    x = data[:320].view(10, 32)
    assert torch.sigmoid(heads.classifiers[0](ee._features(m, heads, 0, ee._hidden_states(m, x)[0])[1])).eq(0.5).all()
    losses = ee.train_exit_classifiers(m, heads, data, steps=60, batch_size=8, seq_len=32, lr=3e-2)
    assert losses[-1] < losses[0]
    # held-out windows: the classifier ranks agreeing exits above disagreeing ones (AUC > 0.5)
    with torch.no_grad():
        hs = ee._hidden_states(m, data[2000:2640].view(20, 32))
        final = heads.logits(m, 3, hs[-1]).argmax(-1)
        lg, feats = ee._features(m, heads, 1, hs[1])
        score, label = heads.classifiers[1](feats)[..., 0].flatten(), (lg.argmax(-1) == final).flatten()
    pos, neg = score[label], score[~label]
    assert 0 < len(pos) < len(score)
    auc = (pos[:, None] > neg[None]).double().mean()
    assert auc > 0.6, auc
    cfg = ee.EarlyExitConfig(threshold=0.0, tau=1e6, measure="classifier", min_layer=2, max_new_tokens=6)
    assert (ee.generate(m, heads, _prompts(1), cfg).layers_used[:, 1:] == 2).all()
    with pytest.raises(ValueError, match="1-D token tensor"):
        ee.train_exit_classifiers(m, heads, data[:10], seq_len=32)


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
