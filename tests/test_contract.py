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


def _cases() -> list[Case]:
    from paretoml.demo import DemoConfig
    from paretoml.models import GPTConfig

    return [
        Case(DemoConfig, "epochs", 0, _demo_smoke),
        Case(GPTConfig, "n_head", 0, _gpt_smoke),
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
