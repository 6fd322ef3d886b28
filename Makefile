# The two commands that matter on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the package (with its dev extra) when it is missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEACHER := tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors

.PHONY: demo test lint bench install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job on the bundled default model and data: compress the reference teacher (cp at rate 0.1,
# Layer-Decomp alone keeps about a third of its accuracy), distil it back with E2E-KD on the Fashion-MNIST
# training set (a short schedule: 400 updates of 128 images), evaluate before and after, export and
# check ONNX, and write the report (with the accuracy curve) to demo-resnet32-cp-kd/.
demo: install
	$(BIN)/tnncompress run $(TEACHER) --format cp --rate 0.1 --data fashion-mnist --kd e2e --kd-steps 400 \
		--out demo-resnet32-cp-kd --force

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check tnncompress cli tests benchmarks scripts

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
