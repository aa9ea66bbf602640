"""The `paretoml` CLI: help, version, frontier on a fixture, demo, error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from paretoml import __version__
from paretoml.cli import main
from paretoml.frontier import Point, read_jsonl, write_jsonl


def _fixture(path):
    write_jsonl(path, [
        Point("fast", quality={"accuracy": 0.90}, cost={"latency_ms": 1.0}),
        Point("slow", quality={"accuracy": 0.80}, cost={"latency_ms": 2.0}),
        Point("peer", quality={"accuracy": 0.95}, cost={"latency_ms": 3.0}, peer=True),
    ])
    return path


def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "frontier" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_cli_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frontier", "x.jsonl"])  # --x/--y missing
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_cli_frontier_json_marks_front(tmp_path, capsys):
    f = _fixture(tmp_path / "p.jsonl")
    assert main(["frontier", str(f), "--x", "latency_ms", "--y", "accuracy", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["variant"]: r["on_front"] for r in rows} == {"fast": True, "slow": False, "peer": True}


def test_cli_frontier_table_and_report(tmp_path, capsys):
    f = _fixture(tmp_path / "p.jsonl")
    out = tmp_path / "rep"
    assert main(["frontier", str(f), "--x", "latency_ms:min", "--y", "accuracy:max", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "★" in text and "fast" in text
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG" and (out / "report.html").exists()
    assert len(read_jsonl(out / "points.jsonl")) == 3


@pytest.mark.parametrize("content, fragment", [
    ("", "no points"),
    ('{"variant": "a", "quality": {}, "cost": {}}\n{oops\n', ":2: malformed JSON"),
])
def test_cli_frontier_bad_file_one_line_exit_1(tmp_path, capsys, content, fragment):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    assert main(["frontier", str(f), "--x", "latency_ms", "--y", "accuracy"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and err[0].startswith("paretoml frontier: error:")


def test_cli_frontier_missing_objective_and_bad_direction(tmp_path, capsys):
    f = _fixture(tmp_path / "p.jsonl")
    assert main(["frontier", str(f), "--x", "latency_ms", "--y", "bleu"]) == 1
    assert "lacks 'bleu'" in capsys.readouterr().err
    assert main(["frontier", str(f), "--x", "latency_ms:up", "--y", "accuracy"]) == 1
    assert "unknown direction 'up'" in capsys.readouterr().err
    assert main(["frontier", str(tmp_path / "nope.jsonl"), "--x", "a", "--y", "b"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_cli_frontier_failure_writes_no_report(tmp_path):
    f = _fixture(tmp_path / "p.jsonl")
    out = tmp_path / "rep"
    assert main(["frontier", str(f), "--x", "latency_ms", "--y", "bleu", "--out", str(out)]) == 1
    assert not out.exists()


def test_cli_verbose_shows_traceback(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text("")
    with pytest.raises(ValueError, match="no points"):
        main(["-v", "frontier", str(f), "--x", "a", "--y", "b"])


def test_cli_demo_quick_json(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--json", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = {r["variant"] for r in rows}
    assert {"mlp-h16", "mlp-h64", "sklearn-logreg"} <= names
    assert any(r["on_front"] for r in rows)
    assert (out / "report.html").exists() and (out / "frontier.png").exists()


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "paretoml.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and __version__ in r.stdout


def test_print_json_is_strict_json_with_padding(capsys):
    import numpy as np

    from paretoml.cli import print_json

    print_json({"ids": np.array([[3, -1]]), "distances": np.array([[0.5, -np.inf]]), "n": float("nan")})
    out = capsys.readouterr().out
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == {
        "ids": [[3, -1]], "distances": [[0.5, None]], "n": None}
