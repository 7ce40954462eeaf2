# One-command set-up: `make run` (editor) and `make test` (test suite) on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/python main.py

# -p tests.skip_policy: with CI set (.ci/run), a skip is a failure unless the README calls that part optional
test: setup
	bash tools/test_setup.sh
	$(BIN)/python -m pytest -q -p tests.skip_policy tests

bench: setup
	$(BIN)/python bench/render.py

clean:
	rm -rf $(VENV) .pytest_cache
