# Set up and run the project on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints/ci.txt

.PHONY: demo test bench clean

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

demo: $(VENV)/.export
	$(BIN)/python -m export all
	$(BIN)/python samples/text_to_video.py

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf bundles outputs
