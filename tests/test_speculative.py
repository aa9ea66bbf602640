"""Speculative decoding: exactness (greedy tokens, sampled distribution), fast loop parity, bad input."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from paretoml.infer import decode
from paretoml.infer import speculative as sp
from paretoml.models.gpt import GPT, GPTConfig


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(V=17, block=96, scale=30.0, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    t = GPT(GPTConfig.llama(vocab_size=V, n_layer=4, n_head=4, n_kv_head=2, n_embd=32, d_ff=64,
                                    block_size=block))
    d = GPT(GPTConfig.llama(vocab_size=V, n_layer=1, n_head=2, n_embd=16, d_ff=32, block_size=block))
    with torch.no_grad():  # sharpen the random-init logits so that the draft is informative but wrong often
        t.lm_head.weight.mul_(scale)
        d.lm_head.weight.mul_(scale)
    return t.to(dtype).eval(), d.to(dtype).eval()


def _prompts(V, lengths=(5, 9, 1, 3), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g) for n in lengths]


def test_decode_generate_matches_reference_loop_gpt2_and_llama():
    torch.manual_seed(0)
    for cfg in (GPTConfig(vocab_size=17, n_layer=3, n_head=2, n_embd=32, block_size=64),
                GPTConfig.llama(vocab_size=17, n_layer=3, n_head=4, n_kv_head=2, n_embd=32, block_size=64)):
        m = GPT(cfg).double().eval()
        with torch.no_grad():
            m.lm_head.weight.mul_(50)
        prompts = _prompts(17)
        out = decode.generate(m, prompts, decode.DecodeConfig(max_new_tokens=20))
        for i, p in enumerate(prompts):  # GPT.generate: the model's own simple KV-cache loop
            assert torch.equal(out[i], m.generate(p[None], 20)[0, len(p):])


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_speculative_greedy_identical_to_target_greedy(gamma):
    t, d = _pair()
    prompts = _prompts(17)
    ref = decode.generate(t, prompts, decode.DecodeConfig(max_new_tokens=40))
    res = sp.generate(t, d, prompts, sp.SpeculativeConfig(gamma=gamma, max_new_tokens=40))
    assert torch.equal(res.tokens, ref)
    assert res.tokens.shape == (4, 40)
    assert 0.0 <= res.acceptance_rate < 1.0
    assert res.rounds >= 40 / (gamma + 1)


def test_speculative_self_draft_accepts_everything():
    # draft == target: every proposal is accepted, γ+1 tokens per round, α = 1
    t, _ = _pair()
    res = sp.generate(t, t, _prompts(17), sp.SpeculativeConfig(gamma=3, max_new_tokens=40))
    assert res.acceptance_rate == pytest.approx(1.0)
    assert res.tokens_per_round == pytest.approx(4.0)
    assert res.rounds == 10


def _sequence_distribution(model, prompt, n_new, V, **sampling):
    """Exact probability of every continuation of length n_new under the sampling rule."""
    conts = torch.tensor(list(itertools.product(range(V), repeat=n_new)))  # (V^n, n)
    x = torch.cat([prompt.expand(len(conts), -1), conts], 1)
    with torch.no_grad():
        probs = decode.sampling_probs(model(x).logits[:, len(prompt) - 1 : -1], **sampling)  # (N, n, V)
    return probs.gather(2, conts[..., None])[..., 0].double().prod(1).numpy()


def _histogram(tokens, V):
    codes = np.zeros(len(tokens), dtype=np.int64)
    for j in range(tokens.shape[1]):
        codes = codes * V + tokens[:, j].numpy()
    return np.bincount(codes, minlength=V ** tokens.shape[1])


@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.7, top_k=3, top_p=0.9)])
def test_speculative_sampled_distribution_equals_target(sampling):
    """Chi-square goodness of fit of N speculative samples to the target's exact distribution
    over all V^3 = 64 continuations. Stated power: at significance 1e-3 the test rejects any
    alternative with Σ (p' − p)² / p ≥ 0.005 (e.g. TV ≈ 0.03 spread over the cells) with
    probability ≥ 0.95 (noncentral χ², computed below); as a negative control it rejects
    plain draft sampling."""
    V, n_new, N = 4, 3, 20000
    t, d = _pair(V=V, block=16, scale=4.0, seed=3, dtype=torch.float32)
    prompt = torch.tensor([1, 2])
    p_exact = _sequence_distribution(t, prompt, n_new, V, **sampling)
    keep = p_exact > 1e-12
    df = int(keep.sum()) - 1
    crit = stats.chi2.ppf(1 - 1e-3, df)
    assert stats.ncx2.sf(crit, df, N * 0.005) >= 0.95  # the power we state
    res = sp.generate(t, d, prompt.expand(N, -1), sp.SpeculativeConfig(gamma=2, max_new_tokens=n_new, **sampling),
                      generator=torch.Generator().manual_seed(0))
    obs = _histogram(res.tokens, V)
    assert obs[~keep].sum() == 0  # nothing outside the target's support (top-k / top-p)
    chi2 = ((obs[keep] - N * p_exact[keep]) ** 2 / (N * p_exact[keep])).sum()
    assert chi2 < crit, f"chi2 {chi2:.1f} >= critical {crit:.1f}: speculative samples differ from the target"
    # negative control: the draft's own samples must fail the same test (else the test has no power here)
    q_draft = _sequence_distribution(d, prompt, n_new, V, **sampling)
    assert N * (((q_draft[keep] - p_exact[keep]) ** 2) / p_exact[keep]).sum() > 2 * crit
    assert 0.0 < res.acceptance_rate < 1.0


def test_speculative_sampled_fast_loop_matches_target_sampler():
    # the target-only sampled loop follows the same distribution (first-token marginal)
    V, N = 4, 20000
    t, _ = _pair(V=V, block=16, scale=4.0, seed=3, dtype=torch.float32)
    prompt = torch.tensor([1, 2])
    p = _sequence_distribution(t, prompt, 1, V, temperature=1.0)
    out = decode.generate(t, prompt.expand(N, -1), decode.DecodeConfig(max_new_tokens=1, temperature=1.0),
                          generator=torch.Generator().manual_seed(1))
    obs = np.bincount(out[:, 0].numpy(), minlength=V)
    keep = p > 0
    chi2 = ((obs[keep] - N * p[keep]) ** 2 / (N * p[keep])).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-3, int(keep.sum()) - 1)


def test_theoretical_speedup_formula():
    # α = 0 → one token per round at cost γc + 1; α → 1 → γ + 1 tokens
    assert sp.expected_tokens_per_round(0.0, 4) == 1.0
    assert sp.expected_tokens_per_round(1.0, 4) == 5.0
    assert sp.expected_tokens_per_round(0.5, 2) == pytest.approx(1.75)  # 1 + .5 + .25
    assert sp.theoretical_speedup(0.5, 2, 0.25) == pytest.approx(1.75 / 1.5)


# --- bad input ------------------------------------------------------------------------------


def test_speculative_vocab_mismatch_raises():
    t, _ = _pair(V=17)
    d = GPT(GPTConfig(vocab_size=18, n_layer=1, n_head=2, n_embd=16, block_size=96)).double()
    with pytest.raises(ValueError, match="vocabulary"):
        sp.generate(t, d, _prompts(17))


def test_speculative_non_gpt_raises():
    t, _ = _pair()
    with pytest.raises(TypeError, match="draft must be a paretoml GPT"):
        sp.generate(t, torch.nn.Linear(2, 2), _prompts(17))
    with pytest.raises(TypeError, match="paretoml GPT"):
        decode.generate(torch.nn.Linear(2, 2), _prompts(17))


@pytest.mark.parametrize("kw, field", [
    (dict(gamma=0), "gamma"), (dict(temperature=-0.1), "temperature"), (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
])
def test_speculative_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        sp.SpeculativeConfig(**kw)
    if field != "gamma":
        with pytest.raises(ValueError, match=field):
            decode.DecodeConfig(**kw)


def test_speculative_prompt_longer_than_context_raises():
    t, d = _pair(block=32)
    with pytest.raises(ValueError, match="exceed the model's context of 32"):
        sp.generate(t, d, [torch.zeros(30, dtype=torch.long)], sp.SpeculativeConfig(gamma=4, max_new_tokens=8))
    with pytest.raises(ValueError, match="exceed the model's context"):
        decode.generate(t, [torch.zeros(40, dtype=torch.long)])


def test_speculative_empty_prompt_list_and_empty_prompt_raise():
    t, d = _pair()
    with pytest.raises(ValueError, match="non-empty list"):
        sp.generate(t, d, [])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sp.generate(t, d, [torch.tensor([1]), torch.tensor([], dtype=torch.long)])
    with pytest.raises(ValueError, match="outside"):
        sp.generate(t, d, [torch.tensor([17])])
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        decode.generate(t, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        decode.generate(t, torch.full((2, 3), -1))


def test_speculative_device_mismatch_raises(monkeypatch):
    t, d = _pair()
    real = sp.GPT.parameters

    def fake_params(self, recurse=True):  # pretend the draft lives on another device
        for p in real(self, recurse):
            yield torch.empty(0, device="meta") if self is d else p
    monkeypatch.setattr(sp.GPT, "parameters", fake_params)
    with pytest.raises(ValueError, match="one device"):
        sp.generate(t, d, _prompts(17))


@pytest.mark.gpu
def test_speculative_greedy_identical_on_cuda_with_graphs():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    t, d = _pair(dtype=torch.float32)
    t, d = t.cuda(), d.cuda()
    prompts = _prompts(17)
    ref = decode.generate(t, prompts, decode.DecodeConfig(max_new_tokens=40))
    eager = decode.generate(t, prompts, decode.DecodeConfig(max_new_tokens=40, cuda_graphs=False))
    res = sp.generate(t, d, prompts, sp.SpeculativeConfig(gamma=4, max_new_tokens=40))
    assert torch.equal(ref, eager)
    assert (res.tokens == ref).float().mean() >= 0.95  # tf32/kernel choice may flip near-ties


def test_decoding_configs_follow_the_contract():
    import dataclasses

    from paretoml.infer.distill import DistillSpecConfig
    from paretoml.infer.early_exit import EarlyExitConfig

    for cls in (decode.DecodeConfig, sp.SpeculativeConfig, DistillSpecConfig, EarlyExitConfig):
        cfg = cls()
        assert cls(**dataclasses.asdict(cfg)) == cfg
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, dataclasses.fields(cfg)[0].name, None)
