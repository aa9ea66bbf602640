"""Confidence cascades: confidence rules, deferral only on low-confidence rows, calibration."""

import numpy as np
import pytest
import torch

from paretoml.infer.cascade import Cascade, confidence


def test_confidence_rules_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    torch.testing.assert_close(confidence(logits, "max_prob"), torch.tensor([0.7, 0.4]))
    torch.testing.assert_close(confidence(logits, "margin"), torch.tensor([0.5, 0.05]))
    ent = -(torch.tensor([0.7, 0.2, 0.1]) * torch.tensor([0.7, 0.2, 0.1]).log()).sum()
    assert float(confidence(logits, "entropy")[0]) == pytest.approx(-float(ent), rel=1e-5)
    # sequences: Chow-Quantile over per-token top log-probs; q = 0 is the least confident token
    seq = torch.log(torch.tensor([[[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]]]))
    assert float(confidence(seq, "quantile", 0.0)) == pytest.approx(np.log(0.6), rel=1e-5)
    assert float(confidence(seq, "quantile", 1.0)) == pytest.approx(np.log(0.9), rel=1e-5)
    assert float(confidence(seq, "max_prob")) == pytest.approx(0.6, rel=1e-5)


class _Counting:
    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, x):
        self.rows += len(x)
        return self.fn(x)


def _task(n=600, seed=0):
    """Synthetic 3-class task: the small model is right when confident, the large always."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    hard = torch.rand(n, generator=g) < 0.3
    small_logits = torch.where(hard[:, None], torch.zeros(n, 3), 4.0 * torch.nn.functional.one_hot(y, 3))
    small_logits[hard, 0] += 0.1  # uninformed guess on hard rows: class 0
    x = torch.cat([small_logits, y[:, None].float()], 1)  # the "input" carries what each model needs
    small = lambda x: x[:, :3]  # noqa: E731
    large = lambda x: 5.0 * torch.nn.functional.one_hot(x[:, 3].long(), 3).float()  # noqa: E731
    return x, y, hard, small, large


def test_cascade_defers_exactly_the_low_confidence_rows_and_runs_large_only_there():
    x, y, hard, small, large = _task()
    lg = _Counting(large)
    cas = Cascade(small, lg, "max_prob", threshold=0.5)
    out = cas.predict(x)
    assert torch.equal(out.deferred, hard)
    assert lg.rows == int(hard.sum())
    assert (out.predictions == y).all()


def test_cascade_calibration_reaches_target_with_minimal_deferral():
    x, y, hard, small, large = _task()
    cas = Cascade(small, large, "margin")
    thr = cas.calibrate(x, y, target_accuracy=1.0)
    out = cas.predict(x)
    assert float((out.predictions == y).float().mean()) == 1.0
    # minimal: the wrong small answers are the hard rows not in class 0, all must be deferred;
    # the hard rows are all tied in confidence, so calibration defers all of them and no more
    assert out.deferral_rate == pytest.approx(float(hard.float().mean()))
    assert cas.threshold == thr
    assert cas.curve_[0] == (0.0, pytest.approx(float((small(x).argmax(-1) == y).float().mean())))
    # a lower target needs less deferral
    cas.calibrate(x, y, target_accuracy=0.9)
    assert cas.predict(x).deferral_rate < out.deferral_rate


def _gain_task(n=1200, seed=0):
    """Easy rows (40%): small sure and right. Mid rows (30%): small p_max 0.6, right half the time,
    large right. Hopeless rows (30%): small p_max 0.4 and both wrong. Chow's rule defers the
    hopeless rows first; only the mid rows gain from the large model."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    kind = torch.randint(0, 10, (n,), generator=g)
    easy, mid = kind < 4, (kind >= 4) & (kind < 7)
    hopeless = kind >= 7
    wrong = (y + 1) % 3
    coin = torch.rand(n, generator=g) < 0.5
    top = torch.where(easy | (mid & coin), y, wrong)
    jitter = 0.05 * (torch.rand(n, generator=g) - 0.5)  # confidences vary within a group, not with correctness
    pmax = torch.where(easy, 0.95, torch.where(mid, 0.6, 0.4)) + jitter
    probs = ((1 - pmax) / 2)[:, None].expand(n, 3).clone()
    probs[torch.arange(n), top] = pmax
    large_pred = torch.where(hopeless, wrong, y)
    x = torch.cat([probs.log(), large_pred[:, None].float()], 1)
    small = lambda x: x[:, :3]  # noqa: E731
    large = lambda x: 5.0 * torch.nn.functional.one_hot(x[:, 3].long(), 3).float()  # noqa: E731
    return x, y, mid, small, large


def test_learned_rule_defers_where_the_large_model_gains():
    x, y, mid, small, large = _gain_task()
    acc_large = float((large(x).argmax(-1) == y).float().mean())
    chow = Cascade(small, large, "max_prob")
    chow.calibrate(x, y, target_accuracy=acc_large)
    learned = Cascade(small, large, "learned")
    w = learned.fit_rule(x[:600], y[:600])
    assert w.shape == (13,)
    learned.calibrate(x, y, target_accuracy=acc_large)
    out_c, out_l = chow.predict(x), learned.predict(x)
    assert float((out_l.predictions == y).float().mean()) >= acc_large
    # the learned rule defers the mid rows only (30%); Chow's has to take the hopeless ones too (60%)
    assert not (out_l.deferred & ~mid).any()
    assert out_l.deferral_rate == pytest.approx(float(mid.float().mean()), abs=0.03)
    assert out_c.deferral_rate == pytest.approx(float(mid.float().mean()) + 0.3, abs=0.05)
    # the gain estimate: 0.5 on mid rows, 0 elsewhere (groups are separable by the features)
    from paretoml.infer.cascade import gain_features

    est = gain_features(small(x)) @ w
    assert float(est[mid].mean()) == pytest.approx(float(((large(x).argmax(-1) == y).double()
                                                         - (small(x).argmax(-1) == y).double())[mid].mean()), abs=0.05)
    assert float(est[~mid].abs().mean()) < 0.05 and float(est[~mid].max()) < float(est[mid].min())


def test_cascade_bad_input():
    x, y, _, small, large = _task(20)
    with pytest.raises(ValueError, match="rule"):
        Cascade(small, large, "maxprob")
    with pytest.raises(TypeError, match="callables"):
        Cascade(small, 3)
    with pytest.raises(ValueError, match="quantile"):
        Cascade(small, large, "quantile", quantile=1.5)
    with pytest.raises(ValueError, match="calibrate"):
        Cascade(small, large).predict(x)
    with pytest.raises(ValueError, match="target_accuracy"):
        Cascade(small, large).calibrate(x, y, 1.5)
    with pytest.raises(ValueError, match="labels"):
        Cascade(small, large).calibrate(x, y[:5], 0.9)
    with pytest.raises(ValueError, match="rule must be one of"):
        confidence(torch.zeros(2, 3), "x")
    with pytest.raises(ValueError, match="shape"):
        confidence(torch.zeros(3))
    with pytest.raises(ValueError, match="needs fitted weights"):
        confidence(torch.zeros(2, 3), "learned")
    with pytest.raises(ValueError, match="not fitted"):
        Cascade(small, large, "learned").calibrate(x, y, 0.9)
    with pytest.raises(ValueError, match="only the 'learned' rule"):
        Cascade(small, large).fit_rule(x, y)
    with pytest.raises(ValueError, match="labels"):
        Cascade(small, large, "learned").fit_rule(x, y[:5])
    from paretoml.infer.cascade import gain_features

    with pytest.raises(ValueError, match=r"\(N, K\)"):
        gain_features(torch.zeros(2, 3, 4))


def test_confidence_with_lengths_matches_per_row_reference():
    from paretoml.infer.cascade import confidence

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, 5, generator=g) * 2
    lengths = torch.tensor([1, 2, 3, 5, 7, 4])
    top = torch.log_softmax(logits, -1).max(-1).values
    p = torch.softmax(logits, -1)
    for q in (0.0, 0.25, 0.5, 1.0):
        want = torch.stack([torch.quantile(top[i, : lengths[i]], q) for i in range(6)])
        torch.testing.assert_close(confidence(logits, "quantile", q, lengths=lengths), want)
    want = torch.stack([top[i, : lengths[i]].mean() for i in range(6)])
    torch.testing.assert_close(confidence(logits, "mean", lengths=lengths), want)
    want = torch.stack([p[i, : lengths[i]].max(-1).values.min() for i in range(6)])
    torch.testing.assert_close(confidence(logits, "max_prob", lengths=lengths), want)
    # without lengths every position counts
    torch.testing.assert_close(confidence(logits, "quantile", 0.5), torch.quantile(top, 0.5, dim=-1))
    for bad in (torch.tensor([0, 1, 1, 1, 1, 1]), torch.tensor([8, 1, 1, 1, 1, 1]), torch.tensor([1, 2])):
        with pytest.raises(ValueError, match="lengths"):
            confidence(logits, "quantile", 0.5, lengths=bad)


def test_deferral_threshold_by_hand():
    from paretoml.infer.cascade import deferral_threshold

    conf = torch.tensor([0.9, 0.1, 0.5, 0.3])
    ok_s = torch.tensor([True, False, True, False])
    ok_l = torch.tensor([True, True, False, True])
    # least confident first: rows 1 (0.1), 3 (0.3), 2 (0.5), 0 (0.9)
    # defer 0 -> 2/4, defer row 1 -> 3/4, + row 3 -> 4/4, + row 2 -> 3/4, + row 0 -> 3/4
    thr, curve = deferral_threshold(conf, ok_s, ok_l, 1.0)
    assert [a for _, a in curve] == [0.5, 0.75, 1.0, 0.75, 0.75]
    assert thr == pytest.approx(0.4)  # defer rows with conf < 0.4: rows 1 and 3
    assert deferral_threshold(conf, ok_s, ok_l, 0.5)[0] < 0.1  # the target is met with no deferral
    assert deferral_threshold(conf, ok_s, ~ok_l | ok_l, 1.0)[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="equal"):
        deferral_threshold(conf, ok_s[:3], ok_l, 0.5)
    with pytest.raises(ValueError, match="target_accuracy"):
        deferral_threshold(conf, ok_s, ok_l, 1.5)


def test_confidence_refuses_quantile_outside_unit_interval():
    with pytest.raises(ValueError, match="quantile must be in"):
        confidence(torch.zeros(2, 3, 4), "quantile", 1.5, lengths=torch.tensor([1, 3]))
