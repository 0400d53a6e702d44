# segtool: the two commands a newcomer runs.
#   make demo   install segtool into .venv and run the pipeline on examples/
#   make test   install with the test extra, lint, and run the tests

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= build/demo

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.installed

# A small, fast model for the CPU: a ResNet-10 encoder (timm) with a slim U-Net decoder.
DEMO_MODEL = --encoder tu-resnet10t --decoder-channels 64,32,16,16,16 --size 128

demo: $(VENV)/.installed
	$(BIN)/segtool rasterize examples/annotations $(DEMO)/dataset --labels examples/labels.txt --overwrite
	$(BIN)/segtool split $(DEMO)/dataset --val 0.15 --test 0.15 --seed 0
	$(BIN)/segtool train $(DEMO)/dataset --out $(DEMO)/run $(DEMO_MODEL) --epochs 25 \
		--batch-size 8 --lr 2e-3 --overwrite
	$(BIN)/segtool evaluate --model $(DEMO)/run $(DEMO)/dataset --split test --gallery 6
	$(BIN)/segtool predict $(DEMO)/run $(DEMO)/dataset/images $(DEMO)/predictions --split test \
		--overlay --overwrite
	@echo "gallery of the worst test images: $(DEMO)/run/evaluation/test/gallery/index.html"
	@echo "overlays of the test predictions: $(DEMO)/predictions/overlays/"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_whole.py
	$(BIN)/python benchmarks/bench_rasterize.py
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_multilabel.py
	$(BIN)/python benchmarks/bench_hd95_3d.py
	$(BIN)/python benchmarks/bench_volume_loader.py
	$(BIN)/python benchmarks/bench_onnx.py

clean:
	rm -rf build
