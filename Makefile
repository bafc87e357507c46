# The two commands of the README: `make demo` (the whole pipeline on the tiny model and bundled synthetic data)
# and `make test` (the linter, then the tests and the package's doctests). Both create the CPU virtual environment
# on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test test-fast lint clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[cpu,test]'
	# torchaudio/torchcodec arrive as CUDA builds that break imports beside the CPU torch; nothing here uses them.
	$(PY) -m pip uninstall -y -q torchaudio torchcodec || true
	$(PY) -c "from medvlthinker.compat.torchvision_ops import write_pth; print(write_pth())"
	touch $(STAMP)

demo: setup
	PYTHON=$(CURDIR)/$(PY) bash scripts/demo.sh

test: setup lint
	$(PY) -m pytest tests medvlthinker -q --timeout=900 -x --durations=15

lint: setup
	$(VENV)/bin/ruff check --no-cache .

test-fast: setup
	$(PY) -m pytest tests medvlthinker -q -m "not vllm and not slow"

clean-cache:
	rm -rf .cache
