# The two commands that matter on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the package (with its dev extra) when it is missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEACHER := tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors

.PHONY: demo test test-fast lint bench install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The main job on the bundled default model and data: compress the reference teacher (reshaped CP, 10% of
# the parameters of its compressed layers), fit each layer's output on a calibration pool of training
# images (data-aware Layer-Decomp), distil it with `--kd auto` (cached Seq-KD by blocks, then E2E-KD) in a
# 4-minute budget, evaluate before and after, export and check ONNX, and write the report to
# demo-resnet32-mcp-auto/ (the path of report.html is printed at the end; nothing is opened).
demo: install
	$(BIN)/tnncompress run $(TEACHER) --format mcp --rate 0.1 --data fashion-mnist --kd auto --kd-budget 4m \
		--out demo-resnet32-mcp-auto --force

# One pytest-xdist worker per core this process may use (at most 4: each holds its own torch, and the
# whole-pipeline tests need a few GB each), each on one thread (tests/conftest.py); a busy worker's tests
# are taken over by whichever worker is idle (worksteal). 25 min -> 12 min on the 2-core development
# machine (BENCHMARKS.md).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 4 ] && n=4; echo $$n)

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# A quick answer while developing: every test but those marked slow (whole-pipeline runs and anything
# that took 2 s or more when marked); CI runs the whole suite (`make test`).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check tnncompress cli tests benchmarks scripts

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
