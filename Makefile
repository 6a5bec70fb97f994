# Prack: `make run` starts the server with a demo worker; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test install native bench fuzz clean

# Python >= 3.11 with venv, its C headers and a C compiler are all the build
# needs; say which one is missing rather than fail deep inside pip.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Prack needs Python 3.11 or newer ($(PYTHON) is older); try make PYTHON=python3.11"; exit 1; }
	@$(PYTHON) -c 'import os, sysconfig; p = sysconfig.get_paths()["include"]; os.stat(os.path.join(p, "Python.h"))' 2>/dev/null || \
	  { echo "Python's C headers are missing (Debian/Ubuntu: apt-get install python3-dev)"; exit 1; }
	@command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || \
	  { echo "a C compiler is needed (Debian/Ubuntu: apt-get install gcc)"; exit 1; }
	$(PYTHON) -m venv $(VENV) || \
	  { echo "python -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
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

# Prack against nginx, uvicorn, gunicorn and Mongrel2 on loopback, side by
# side (bench/run.py), then docs/benchmarks.md and its plots (bench/report.py).
# BENCH_ARGS="--quick" tries the harness in a minute.
bench: install
	bash bench/install-peers.sh
	$(PIP) install '.[bench]'
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/report.py

# Fuzzing, not part of `make test` (fuzz/run.py): the libFuzzer harnesses of
# the C parser and chunked decoder (clang, ASan/UBSan) and the atheris harness
# through prack.http to the worker's environment, FUZZ_SECONDS each, one after
# the other; prints execs and execs/s. Output in build/fuzz/ (not committed).
FUZZ_SECONDS ?= 60
fuzz: install
	@command -v clang >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null; \
	  else echo "make fuzz needs clang with libFuzzer (Debian/Ubuntu: apt-get install clang)"; exit 1; fi; }
	$(PIP) install atheris
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
	rm -f src/prack/_native/_prack.c src/prack/_native/_prack.o src/prack/_native/*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
