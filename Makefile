# Two set-up commands from a fresh clone: `make demo` and `make test`.
# torch's CPU build is installed first so no multi-GB CUDA build is ever pulled in.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test install install-dev peers bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_CPU)"
	$(PIP) install -q -e .
	touch $@

# The tests check parity with the peers (HF tokenizers ids, faiss/scann recall, magika labels)
# and run the sharded index on a local Ray cluster, so the test environment has them too.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev,peers,distributed]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Side-by-side peers (faiss, hnswlib, scann, HF tokenizers, magika, torchao) for benchmarks.
peers: $(VENV)/.installed
	$(PIP) install -q -e ".[peers]"

demo: $(VENV)/.installed
	$(VENV)/bin/paretoml demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) report .pytest_cache .hypothesis
