# The README's front door. `make export` and `make test` each set up a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python
VARIANT ?= t1
TARGET ?= trt

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins torch 2.13.0, whose CPU wheel lies on disk (the library does not).
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

.PHONY: install export test parity lint
install: $(VENV)/.installed

export: install
	$(VENV)/bin/partialnet-export --variant $(VARIANT) --target $(TARGET)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

# Every variant x {onnxruntime, openvino, torch} x {fp32, fp16}. 32 images per cell keeps
# CI inside its budget (torch's fp16 CPU kernels are slow); the export gate itself uses 64.
parity: install
	$(VENV)/bin/partialnet-bench parity --images 32 --output parity-results
