# Set up and run the project on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints/ci.txt
# The Triton server's own environment: nvidia-pytriton (the tritonserver binary) pins numpy<2.
TRITON_VENV := .venv-triton

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

# The server's Python-backend models run ONNX Runtime and the runtime's pipelines (on PYTHONPATH) in it.
$(TRITON_VENV)/.server: constraints/triton-server.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q -c constraints/triton-server.txt nvidia-pytriton numpy \
		onnxruntime opencv-python-headless ftfy regex
	touch $@

demo: $(VENV)/.export
	$(BIN)/python -m export all
	$(BIN)/python samples/text_to_video.py

# the triton-marked tests start a tritonserver from $(TRITON_VENV)
test: $(VENV)/.dev $(TRITON_VENV)/.server
	$(BIN)/python -m pytest -q

clean:
	rm -rf bundles outputs
