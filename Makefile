# Prack: `make run` starts the server with a demo worker; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test install native bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Installs the package (compiling the C core through cffi) into .venv.
install: $(BIN)/python
	$(PIP) install '.[test]'

# Starts prack-server with its embedded defaults (public 127.0.0.1:8080,
# API 127.0.0.1:4242) plus the standard-library demo worker from examples/.
run: install
	@$(BIN)/python examples/demo_worker.py --api http://127.0.0.1:4242 & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT; \
	$(BIN)/prack-server $(ARGS)

# Every test: C parser corpus, ring, config/CLI, and end to end with the real
# server. pytest exits non-zero when it collects no tests, so that fails too.
test: install
	bash tests/install-deps.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# Developer convenience: build the C core in place under src/ (PYTHONPATH=src).
native:
	flock /tmp/prack-native-build.lock $(PYTHON) src/prack/_native/build.py

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
	rm -f src/prack/_native/_prack.c src/prack/_native/_prack.o src/prack/_native/*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
