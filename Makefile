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

.PHONY: install export test parity lint data test-litert parity-litert
install: $(VENV)/.installed

export: install
	$(VENV)/bin/partialnet-export --variant $(VARIANT) --target $(TARGET)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

# Real images for the matrix: scikit-learn's digits and scikit-image's photographs, written
# from the packages (nothing is downloaded).
DATA ?= parity-data
CKPT := tests/fixtures/digits_t0_64.ckpt
BENCH := $(VENV)/bin/partialnet-bench parity

data: install
	$(PY) -m partialnet.bench.data.datasets --digits $(DATA)/digits --photos $(DATA)/photos

# 1. Every random-weight variant x {onnxruntime, openvino, torch} x {fp32, fp16} on the photos.
# 2. The trained digits model x {onnxruntime, openvino, coreml} x {fp32, fp16, int8}, with
#    accuracy on its val images (int8 calibrated on its train images).
# 3. CoreML fp32/fp16 for t0 on the photos (simulated off macOS).
parity: data
	$(BENCH) --calibration-data $(DATA)/photos --output parity-results/variants
	$(BENCH) --checkpoint $(CKPT) --runtimes onnxruntime,openvino,coreml \
		--precisions fp32,fp16,int8 --eval-data $(DATA)/digits/val \
		--calibration-data $(DATA)/digits/train --output parity-results/digits
	$(BENCH) --variants t0 --runtimes coreml --calibration-data $(DATA)/photos \
		--output parity-results/coreml-t0

# LiteRT (issue 16) in its own venv: litert-torch caps typing-extensions below 4.13 (through
# xdsl), which would hold back every other package of [all] (README, LiteRT).
LITERT_VENV ?= .venv-litert
LITERT_PY := $(LITERT_VENV)/bin/python

$(LITERT_VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(LITERT_VENV)
	$(LITERT_PY) -m pip install --quiet --upgrade pip
	$(LITERT_PY) -m pip install --quiet -c constraints.txt -e '.[litert,bench]' 'pytest>=8' 'scikit-learn>=1.3'
	touch $@

test-litert: $(LITERT_VENV)/.installed
	$(LITERT_PY) -m pytest tests/export/test_litert.py tests/export/test_litert_options.py \
		tests/runtimes/test_litert_runner.py

# The trained digits model x litert x {fp32, fp16, int8}, with accuracy on its val images.
parity-litert: $(LITERT_VENV)/.installed data
	$(LITERT_VENV)/bin/partialnet-bench parity --checkpoint $(CKPT) --runtimes litert \
		--precisions fp32,fp16,int8 --eval-data $(DATA)/digits/val \
		--calibration-data $(DATA)/digits/train --output parity-results/litert
