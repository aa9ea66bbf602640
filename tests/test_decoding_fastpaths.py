"""The decode step's fast paths: float mask over a padded buffer, host pipelining of speculative
rounds (CPU), and the Triton kernels against the plain torch path (GPU)."""

import pytest
import torch

from paretoml.infer import decode
from paretoml.infer import speculative as sp
from paretoml.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = {"float_mask": False, "fused_rope_kv": False, "fused_swiglu": False, "triton_attention": False,
         "skinny_fp32": False, "skinny_m": (2, 8)}


@pytest.fixture
def fast_switches():
    saved = dict(decode.FAST)
    yield decode.FAST
    decode.FAST.clear()
    decode.FAST.update(saved)


def _model(cfg, dtype=torch.float64, seed=0, device="cpu"):
    torch.manual_seed(seed)
    m = GPT(cfg).to(device, dtype).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(30)
    return m


CFGS = [GPTConfig.llama(vocab_size=17, n_layer=3, n_head=4, n_kv_head=2, n_embd=32, block_size=96),
        GPTConfig(vocab_size=17, n_layer=2, n_head=2, n_embd=32, block_size=96)]


@pytest.mark.parametrize("cfg", CFGS)
def test_float_mask_padded_buffer_equals_bool_mask(cfg, fast_switches):
    m = _model(cfg)
    prompt = torch.randint(0, 17, (2, 11), generator=torch.Generator().manual_seed(1))
    out = {}
    for tag, mask in (("bool", False), ("float", True)):
        fast_switches.update({**PLAIN, "float_mask": mask})
        lm = decode.StaticLM(m, 2, 37)  # 37 positions: padded to 48 with the float mask
        assert lm.k.shape[3] == (48 if mask else 37)
        a = lm.forward(prompt, torch.zeros(2, dtype=torch.long))
        b = lm.forward(prompt[:, :4], torch.tensor([11, 9]))  # rows at different positions
        out[tag] = (a, b)
    for x, y in zip(out["float"], out["bool"]):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_pipelined_rounds_give_the_same_result_as_one_round_at_a_time(temperature, monkeypatch):
    t = _model(CFGS[0])
    d = _model(GPTConfig.llama(vocab_size=17, n_layer=1, n_head=2, n_embd=16, block_size=96), seed=1)
    prompts = [torch.randint(0, 17, (n,), generator=torch.Generator().manual_seed(n)) for n in (5, 9, 1)]
    cfg = sp.SpeculativeConfig(gamma=3, max_new_tokens=30, temperature=temperature)
    res = {}
    for depth in (1, 2, 3):
        monkeypatch.setattr(sp, "PIPELINE", depth)
        res[depth] = sp.generate(t, d, prompts, cfg, generator=torch.Generator().manual_seed(4))
    ref = decode.generate(t, prompts, decode.DecodeConfig(max_new_tokens=30))
    for depth in (2, 3):
        assert torch.equal(res[depth].tokens, res[1].tokens)
        assert res[depth].rounds == res[1].rounds  # no round launched that was not needed
        assert res[depth].acceptance_rate == pytest.approx(res[1].acceptance_rate)
    if temperature == 0:
        assert torch.equal(res[1].tokens, ref)


# --- GPU: Triton kernels vs the plain torch path ------------------------------------------------

GPU_CFGS = {
    "llama-fp32": (GPTConfig.llama(vocab_size=65, n_layer=2, n_head=8, n_embd=512, block_size=256), torch.float32),
    "llama-gqa-bf16": (GPTConfig.llama(vocab_size=300, n_layer=2, n_head=8, n_kv_head=2, n_embd=256, block_size=256),
                       torch.bfloat16),
    "gpt2-fp32": (GPTConfig(vocab_size=65, n_layer=2, n_head=4, n_embd=128, block_size=256), torch.float32),
    "llama-hs96-fp32": (GPTConfig.llama(vocab_size=65, n_layer=1, n_head=8, n_embd=768, block_size=256), torch.float32),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CFGS))
def test_triton_fast_paths_match_torch_path(name, fast_switches):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    cfg, dt = GPU_CFGS[name]
    torch.backends.cuda.matmul.allow_tf32 = False
    m = _model(cfg, dtype=dt, device="cuda")
    prompt = torch.randint(0, cfg.vocab_size, (1, 40), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    out = {}
    for tag, sw in (("plain", PLAIN), ("fast", {"float_mask": True, "fused_rope_kv": True, "fused_swiglu": True,
                                                 "triton_attention": True, "skinny_fp32": True, "skinny_m": (1, 8)})):
        fast_switches.clear()
        fast_switches.update(sw)
        lm = decode.StaticLM(m, 1, 100)
        with torch.no_grad():
            a = lm.forward(prompt, torch.zeros(1, dtype=torch.long, device="cuda"))
            b = lm.forward(prompt[:, :6], torch.tensor([40], device="cuda"))  # T = 6: skinny GEMMs in fp32
            c = lm.forward(prompt[:, :1], torch.tensor([46], device="cuda"))
        out[tag] = [x.float() for x in (a, b, c, lm.k[:, :, :, :47], lm.v[:, :, :, :47])]
    tol = 2e-2 if dt == torch.bfloat16 else 1e-5
    for x, y in zip(out["fast"], out["plain"]):
        assert float((x - y).norm() / y.norm()) < tol


@pytest.mark.gpu
def test_skinny_kernel_against_float64():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    from paretoml.infer import _decode_kernels as K

    g = torch.Generator("cuda").manual_seed(0)
    for M, N, Kd in ((1, 65, 512), (6, 1536, 512), (8, 512, 1536), (3, 100, 77)):
        x = torch.randn(M, Kd, device="cuda", generator=g)
        w = torch.randn(N, Kd, device="cuda", generator=g)
        r = torch.randn(M, N, device="cuda", generator=g)
        ref = x.double() @ w.double().t() + r.double()
        y = K.skinny_linear(x, w, r)
        assert float((y.double() - ref).norm() / ref.norm()) < 1e-6
