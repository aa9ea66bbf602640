"""The API contract every technique's config follows (DESIGN §3), run over an explicit list.

A technique joins by adding one `Case`: its Config class, a field with a bad value that must
raise `ValueError` naming the field, and a `smoke` callable that runs the verb on a tiny input
with the default config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch


@dataclass(frozen=True)
class Case:
    config: type
    bad_field: str
    bad_value: Any
    smoke: Callable[[Any], None] | None = None  # called with the default config


def _demo_smoke(cfg):
    from paretoml.demo import build_size_sweep, DemoContext, load_digits_split

    small = dataclasses.replace(cfg, hidden_sizes=(8,), epochs=1)
    x_tr, y_tr, x_te, y_te = load_digits_split(small)
    ctx = DemoContext(small, x_tr, y_tr, x_te, y_te, x_tr[:50], y_tr[:50])
    (v,) = build_size_sweep(ctx)
    assert v.predict(x_te[:3]).shape == (3,)


def _gpt_smoke(cfg):
    from paretoml.models import GPT

    out = GPT(cfg)(torch.zeros(1, 4, dtype=torch.long))
    assert out.logits.shape == (1, 4, cfg.vocab_size)


def _vit_smoke(cfg):
    from paretoml.models import ViT

    out = ViT(cfg)(torch.zeros(2, cfg.channels if hasattr(cfg, "channels") else 1, cfg.image_size, cfg.image_size))
    assert out.logits.shape[0] == 2


def _router_smoke(cfg):
    from paretoml.arch.moe import MoE, TaskRouter, task_context

    moe = MoE(16, 32, 4, cfg)
    x = torch.randn(2, 5, 16)
    if isinstance(cfg, TaskRouter):
        with task_context(moe, torch.zeros(2, dtype=torch.long)):
            res = moe(x)
    else:
        res = moe(x)
    assert res.out.shape == x.shape and torch.isfinite(res.aux_loss)


def _wordpiece_smoke(cfg, tmp_vocab=("[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", ",", "!")):
    import tempfile
    from pathlib import Path

    from paretoml.text import WordPieceTokenizer

    with tempfile.TemporaryDirectory() as d:
        vocab = Path(d) / "vocab.txt"
        vocab.write_text("\n".join(tmp_vocab) + "\n")
        tok = WordPieceTokenizer.from_file(vocab, lowercase=cfg.lowercase)
        assert tok.encode("hello worlds!").tokens == ["hello", "world", "##s", "!"]


def _index_smoke(cfg):
    import numpy as np

    from paretoml.retrieval import Index

    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit norm: under "ip" each row's best match is itself
    index = Index(16, dataclasses.replace(cfg, num_partitions=8, leaves_to_search=8, reorder_k=20))
    index.train(x)
    index.add(x)
    D, I = index.search(x[:3], 5)
    assert I.shape == (3, 5) and (I[:, 0] == np.arange(3)).all()


def _quantize_smoke(cfg):
    from paretoml.infer.quantize import QuantLinear, quantize_

    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    x = torch.randn(4, 64)
    ref = model(x)
    quantize_(model, cfg)
    assert isinstance(model[0], QuantLinear)
    assert (model(x) - ref).abs().max() < 0.05 * ref.abs().max()


def _speculative_smoke(cfg):
    from paretoml.infer import speculative
    from paretoml.models import GPT, GPTConfig

    torch.manual_seed(0)
    target = GPT(GPTConfig(vocab_size=16, n_layer=2, n_head=2, n_embd=16, block_size=128)).eval()
    draft = GPT(GPTConfig(vocab_size=16, n_layer=1, n_head=2, n_embd=16, block_size=128)).eval()
    small = dataclasses.replace(cfg, max_new_tokens=8)
    res = speculative.generate(target, draft, [[1, 2, 3]], small)
    ref = target.generate(torch.tensor([[1, 2, 3]]), 8)[0, 3:].tolist()
    assert list(res.tokens[0])[:8] == ref


def _detector_smoke(cfg):
    from paretoml.filetype import Detector

    res = Detector(config=cfg).identify_bytes(b"#!/usr/bin/env python3\nimport os\nprint(os.getcwd())\n" * 4)
    assert res.ok and res.label


def _cases() -> list[Case]:
    from paretoml.arch.moe import BatchPriorityRouter, ExpertChoiceRouter, TaskRouter, TopKRouter
    from paretoml.demo import DemoConfig
    from paretoml.filetype.detector import DetectorConfig
    from paretoml.filetype.features import FeatureConfig
    from paretoml.infer.decode import DecodeConfig
    from paretoml.infer.distill import DistillSpecConfig
    from paretoml.infer.early_exit import EarlyExitConfig
    from paretoml.infer.quantize import QuantizeConfig
    from paretoml.infer.speculative import SpeculativeConfig
    from paretoml.models import GPTConfig, ViTConfig
    from paretoml.retrieval import IndexConfig
    from paretoml.text import WordPieceConfig

    return [
        Case(DemoConfig, "epochs", 0, _demo_smoke),
        Case(GPTConfig, "n_head", 0, _gpt_smoke),
        Case(ViTConfig, "image_size", 0, _vit_smoke),
        Case(TopKRouter, "jitter", 1.5, _router_smoke),
        Case(BatchPriorityRouter, "capacity_ratio", 0.0, _router_smoke),
        Case(ExpertChoiceRouter, "eval_mode", "sideways", _router_smoke),
        Case(TaskRouter, "num_tasks", 0, _router_smoke),
        Case(WordPieceConfig, "max_input_chars_per_word", 0, _wordpiece_smoke),
        Case(IndexConfig, "soar_lambda", -1.0, _index_smoke),
        Case(QuantizeConfig, "bits", 3, _quantize_smoke),
        Case(SpeculativeConfig, "gamma", 0, _speculative_smoke),
        Case(DecodeConfig, "temperature", -1.0),
        Case(DistillSpecConfig, "divergence", "l2"),
        Case(EarlyExitConfig, "threshold", 2.0),
        Case(DetectorConfig, "mode", "psychic", _detector_smoke),
        Case(FeatureConfig, "window", 0),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.config.__name__)
def test_contract_default_constructs_and_is_frozen(case):
    cfg = case.config()
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, dataclasses.fields(cfg)[0].name, None)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.config.__name__)
def test_contract_asdict_round_trips(case):
    cfg = case.config()
    d = dataclasses.asdict(cfg)
    assert case.config(**d) == cfg


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.config.__name__)
def test_contract_bad_value_names_the_field(case):
    with pytest.raises(ValueError, match=case.bad_field):
        dataclasses.replace(case.config(), **{case.bad_field: case.bad_value})


@pytest.mark.parametrize("case", [c for c in CASES if c.smoke], ids=lambda c: c.config.__name__)
def test_contract_verb_runs_on_tiny_input(case):
    case.smoke(case.config())
