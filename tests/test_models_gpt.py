"""The reference GPT: KV-cached decoding equals the full forward pass; config and input errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from paretoml.datasets import CharTokenizer, lm_splits, load_tinyshakespeare, sample_batch
from paretoml.models import GPT, GPTConfig

CONFIGS = {
    "gpt2": GPTConfig(vocab_size=50, n_layer=2, n_head=4, n_embd=64, block_size=32),
    "llama-gqa": GPTConfig.llama(vocab_size=50, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=32),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_gpt_cached_prefill_and_steps_equal_full_forward(name):
    torch.manual_seed(0)
    cfg = CONFIGS[name]
    m = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 20))
    full = m(idx).logits
    cache = m.new_cache(2, 32)
    parts = [m(idx[:, :7], cache=cache).logits, m(idx[:, 7:12], cache=cache).logits]
    parts += [m(idx[:, i : i + 1], cache=cache).logits for i in range(12, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 20


@pytest.mark.parametrize("name", CONFIGS)
def test_gpt_generate_greedy_equals_uncached_argmax_loop(name):
    torch.manual_seed(1)
    cfg = CONFIGS[name]
    m = GPT(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (2, 5))
    got = m.generate(prompt, 10)
    x = prompt
    with torch.no_grad():
        for _ in range(10):
            x = torch.cat([x, m(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, x)


def test_gpt_cache_reset_rolls_back():
    torch.manual_seed(2)
    cfg = CONFIGS["gpt2"]
    m = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, 10))
    cache = m.new_cache(1, 32)
    m(idx[:, :6], cache=cache)
    m(torch.randint(0, cfg.vocab_size, (1, 3)), cache=cache)  # speculative tokens, then rejected
    cache.reset(6)
    torch.testing.assert_close(m(idx[:, 6:], cache=cache).logits, m(idx).logits[:, 6:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="length must be in"):
        cache.reset(99)


def test_gpt_context_overflow_and_bad_shapes():
    m = GPT(CONFIGS["gpt2"])
    with pytest.raises(ValueError, match="exceed the context of 32"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        m(torch.zeros(33, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the model's block_size"):
        m.new_cache(1, 64)
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"n_layer": 2})
    with pytest.raises(ValueError, match="temperature"):
        m.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1.0)


@pytest.mark.parametrize("kw, field", [
    ({"n_embd": 65}, "divisible"), ({"n_kv_head": 3}, "n_kv_head"), ({"mlp": "relu"}, "mlp"),
    ({"norm": "batch"}, "norm"), ({"pos": "alibi"}, "pos"), ({"dropout": 1.0}, "dropout"), ({"d_ff": 0}, "d_ff"),
])
def test_gpt_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kw)


def test_gpt_sums_aux_losses_of_pluggable_ffn():
    @dataclass
    class Out:
        out: torch.Tensor
        aux_loss: torch.Tensor

    class Half(nn.Module):  # an FFN that reports a fixed auxiliary loss
        def forward(self, x):
            return Out(torch.zeros_like(x), torch.tensor(0.5))

    cfg = CONFIGS["gpt2"]
    m = GPT(cfg, ffn_factory=lambda i, c: Half())
    assert m(torch.zeros(1, 4, dtype=torch.long)).aux_loss.item() == pytest.approx(0.5 * cfg.n_layer)


def test_gpt_learns_tinyshakespeare_beyond_unigram():
    # 120 small steps on real text must beat the unigram entropy of the corpus (~3.3 nats;
    # a bigram-level model reaches ~2.5): this catches a broken causal mask, loss or optimiser.
    text = load_tinyshakespeare()
    assert len(text) == 1_115_394
    tok = CharTokenizer.from_text(text)
    train, val = lm_splits(tok.encode(text[:200_000]))
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=32))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        x, y = sample_batch(train, 16, 32, generator=g)
        loss = m(x, y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        x, y = sample_batch(val, 64, 32, generator=g)
        val_loss = m(x, y).loss.item()
    counts = torch.bincount(train, minlength=tok.vocab_size).float()
    p = counts / counts.sum()
    unigram = -(p[p > 0] * p[p > 0].log()).sum().item()
    assert val_loss < unigram - 0.3, (val_loss, unigram)


def test_char_tokenizer_round_trip_and_errors():
    tok = CharTokenizer.from_text("hello world")
    assert tok.decode(tok.encode("hello")) == "hello"
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        tok.encode("z")
    with pytest.raises(ValueError, match="val_fraction"):
        lm_splits(torch.arange(10), 0.0)
    with pytest.raises(ValueError, match="not longer than block_size"):
        sample_batch(torch.arange(10), 2, 10)
