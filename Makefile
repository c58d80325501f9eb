# Set up and run the project on a fresh machine: `make demo`, `make test`; `make docs` serves the documentation.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints/ci.txt
# The Triton server's own environment: nvidia-pytriton (the tritonserver binary) pins numpy<2.
TRITON_VENV := .venv-triton

.PHONY: demo test docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.export: pyproject.toml constraints/ci.txt | $(BIN)/python
	$(PIP) -e '.[export]'
	touch $@

$(VENV)/.dev: $(VENV)/.export
	$(PIP) -e '.[export,dev]'
	# open_clip is the tokenizer reference in tests; its torchvision/timm deps are not needed for that.
	$(PIP) --no-deps open-clip-torch
	touch $@

# mkdocs, mkdocs-material, mkdocstrings: the documentation site (also in the dev extra)
$(VENV)/.docs: pyproject.toml constraints/ci.txt | $(BIN)/python
	$(PIP) -e '.[docs]'
	touch $@

# The server's Python-backend models run ONNX Runtime and the runtime's pipelines (on PYTHONPATH) in it.
$(TRITON_VENV)/.server: constraints/triton-server.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q -c constraints/triton-server.txt nvidia-pytriton numpy \
		onnxruntime opencv-python-headless ftfy regex
	touch $@

demo: $(VENV)/.export
	$(BIN)/python -m export all
	$(BIN)/python samples/text_to_video.py

# the docs must build without a warning (broken links, pages missing from the nav); then the suite.
# the triton-marked tests start a tritonserver from $(TRITON_VENV)
test: $(VENV)/.dev $(TRITON_VENV)/.server
	$(BIN)/python -m mkdocs build --strict --site-dir build/site
	$(BIN)/python -m pytest -q

# the documentation site at http://127.0.0.1:8000, rebuilt on every change (benchmarks/results/*.json included)
docs: $(VENV)/.docs
	$(BIN)/python -m mkdocs serve

clean:
	rm -rf bundles outputs
