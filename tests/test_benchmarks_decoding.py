"""benchmarks/bench_decoding.py runs every phase with --tiny (CPU, seconds) and writes valid points."""

from __future__ import annotations

import pytest
import torch

from paretoml.frontier import read_jsonl


def test_bench_decoding_tiny_writes_points_of_every_phase(tmp_path, load_bench):
    n = torch.get_num_threads()
    try:
        out = tmp_path / "decoding.jsonl"
        load_bench("bench_decoding").main(["--tiny", "--threads", "1", "--out", str(out), "--save-dir", str(tmp_path / "w")])
    finally:
        torch.set_num_threads(n)
    points = read_jsonl(out)
    names = {p.name for p in points}
    assert not [x for x in names if x.startswith("error-")], names
    for want in ("target-only-b1", "target-only-b8", "speculative-plain-g2-b1", "speculative-distilled-g4-b1",
                 "summary-distillspec", "calm-classifier-e2-certified-b1", "cascade-max_prob", "cascade-learned",
                 "cascade-word-quantile0.5", "cascade-word-mean", "cascade-word-learned"):
        assert want in names
    spec = [p for p in points if p.name.startswith("speculative-")]
    assert all(p.quality["agreement"] >= 0.9 for p in spec)  # greedy: same tokens as the target (float32)
    assert all(0.0 <= p.quality["acceptance_rate"] <= 1.0 for p in spec)
    assert all("loadavg_1m" in p.cost for p in points)
    assert sorted(f.name for f in (tmp_path / "w").iterdir()) == [
        "distilled.safetensors", "distilled_tvd.safetensors", "draft.safetensors", "target.safetensors"]


def test_to_hf_llama_same_logits_and_greedy_tokens(load_bench):
    pytest.importorskip("transformers")
    from paretoml.infer import decode
    from paretoml.models.gpt import GPT, GPTConfig

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        m = GPT(GPTConfig.llama(vocab_size=31, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, d_ff=64,
                                block_size=64)).eval()
        hf = load_bench("bench_decoding").to_hf_llama(m)
        x = torch.randint(0, 31, (2, 12))
        with torch.no_grad():
            torch.testing.assert_close(hf(x).logits, m(x).logits, rtol=1e-4, atol=1e-5)
        ours = decode.generate(m, x[:1], decode.DecodeConfig(max_new_tokens=10))
        theirs = load_bench("bench_decoding").hf_generate(hf, x[:1], 10)
        assert torch.equal(ours, theirs)
    finally:
        torch.set_num_threads(n)


def test_decoding_probe_needs_cuda_and_says_so(load_bench):
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the probe itself")
    with pytest.raises(SystemExit) as exc:
        load_bench("bench_decoding_probe").main(["--out", "unused.jsonl"])
    assert "needs a CUDA GPU" in str(exc.value.code)


def test_word_right_by_hand(load_bench):
    word_right = load_bench("bench_decoding").word_right
    truth = torch.tensor([[1, 2, 9, 5], [1, 9, 4, 4], [3, 9, 0, 0]])  # 9 = the boundary
    L = torch.tensor([3, 2, 2])
    gen = torch.tensor([[1, 2, 9, 7],    # right: letters and boundary match, the rest is ignored
                        [1, 8, 9, 4],    # wrong letter (and too long)
                        [3, 9, 0, 0]])   # right
    length = torch.tensor([3, 3, 2])
    assert word_right(gen, length, truth, L).tolist() == [True, False, True]
    # the same letters without the boundary (the word goes on) is wrong
    assert not word_right(torch.tensor([[1, 2, 5, 9]]), torch.tensor([4]), truth[:1], L[:1]).item()


def test_set_refuses_unknown_or_non_numeric_settings(tmp_path, load_bench):
    with pytest.raises(ValueError, match="not a numeric setting"):
        load_bench("bench_decoding").main(["--tiny", "--set", "bogus=1", "--out", str(tmp_path / "x.jsonl")])
