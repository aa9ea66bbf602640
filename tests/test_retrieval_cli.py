"""`paretoml index build|tune|search` end to end on a real sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paretoml.cli import main


@pytest.fixture(scope="module")
def files(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    base = np.load(shared_data / "ann" / "base_100k.f16.npy", mmap_mode="r")[:3000].astype(np.float32)
    q = np.load(shared_data / "ann" / "queries_2k.f16.npy")[:60].astype(np.float32)
    np.save(d / "x.npy", base)
    np.save(d / "q.npy", q)
    return d, base, q


def test_cli_build_tune_search(files, capsys):
    d, base, q = files
    assert main(["index", "build", "--vectors", str(d / "x.npy"), "--spec", "IVF16,SOAR1.5,AH4,RR40",
                 "--out", str(d / "idx"), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["ntotal"] == 3000 and built["d"] == 384
    assert main(["index", "tune", str(d / "idx"), "--queries", str(d / "q.npy"), "--target-recall", "0.9",
                 "-k", "10", "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["recall"] >= 0.9 and tuned["reached_target"]
    assert main(["index", "search", str(d / "idx"), "--queries", str(d / "q.npy"), "-k", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    ids = np.array(res["ids"])
    assert ids.shape == (60, 5)
    truth = np.argsort(-(q @ base.T), axis=1)[:, :5]
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(ids, truth)]) / 5 >= 0.85
    # flags override the stored settings
    assert main(["index", "search", str(d / "idx"), "--queries", str(d / "q.npy"), "-k", "3",
                 "--leaves", "16", "--reorder", "100"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 60


def test_cli_errors_are_one_line(files, capsys):
    d, _, _ = files
    assert main(["index", "build", "--vectors", str(d / "x.npy"), "--spec", "IVF16,BOGUS",
                 "--out", str(d / "bad")]) == 1
    err = capsys.readouterr().err
    assert "cannot parse 'BOGUS'" in err and len(err.strip().splitlines()) == 1
    assert main(["index", "search", str(d / "nothing"), "--queries", str(d / "q.npy")]) == 1
    assert "not an index folder" in capsys.readouterr().err
    assert main(["index", "search", str(d / "idx"), "--queries", str(d / "missing.npy")]) == 1
    assert "not found" in capsys.readouterr().err
