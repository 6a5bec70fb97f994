#!/usr/bin/env bash
# Installs the system tools the tests drive the server with (curl), when missing.
# Python packages come from pyproject's [test] extra via `make install`.
set -euo pipefail
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "install-deps: please install: ${need[*]}" >&2
fi
