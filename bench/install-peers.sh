#!/usr/bin/env bash
# Installs what `make bench` compares Prack with, when missing: wrk, nginx and
# Mongrel2 from Debian (PyPI peers come from pyproject's [bench] extra).
set -euo pipefail
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v mongrel2 >/dev/null 2>&1 || need+=(mongrel2-core)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    # The packages may start a system nginx; the benchmarks run their own.
    if command -v service >/dev/null 2>&1; then service nginx stop >/dev/null 2>&1 || true; fi
else
    echo "install-peers: please install: ${need[*]}" >&2
    exit 1
fi
