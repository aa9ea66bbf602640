"""`import paretoml` stays lean: no optional dependency, no matplotlib, no CUDA initialisation."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["matplotlib", "faiss", "hnswlib", "scann", "tokenizers", "magika", "magic", "ray", "flwr",
         "opacus", "onnxruntime", "torchao", "triton", "transformers", "numba", "sklearn", "rich"]


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_import_paretoml_loads_nothing_heavy():
    code = ("import sys, paretoml; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert _run(code) == ""


def test_import_frontier_and_cli_load_no_optional_dependency():
    # The spine may use rich/numpy, but never matplotlib (only when plotting) or a peer.
    code = ("import sys, paretoml.frontier, paretoml.cli; paretoml.cli._build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules and m not in ('rich', 'numba', 'sklearn')))")
    assert _run(code) == ""


def test_import_does_not_initialise_cuda():
    code = "import torch, paretoml, paretoml.frontier, paretoml.models; print(torch.cuda.is_initialized())"
    assert _run(code) == "False"
