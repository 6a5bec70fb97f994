#!/usr/bin/env bash
# Installs the system tools the tests need, only those missing: curl and a C
# compiler, and the runtimes of the polyglot workers in examples/ (Ruby with
# the rack gem, Node.js, Go, PHP CLI). Python packages come from pyproject's
# [test] extra via `make install`.
#
# As root with apt-get it installs them from Debian; otherwise it names the
# packages to install and exits 0, and the tests that need a missing runtime
# fail saying so (they never skip).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have curl || need+=(curl)
have cc || need+=(gcc libc6-dev)
have ruby || need+=(ruby)
# Debian packages the rack gem as ruby-rack; a gem install works just as well.
if ! have ruby || ! ruby -e 'require "rack"' >/dev/null 2>&1; then need+=(ruby-rack); fi
have node || need+=(nodejs)
have go || need+=(golang-go)
have php || need+=(php-cli)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if have apt-get && [ "$(id -u)" = 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "install-deps: missing ${need[*]} (Debian/Ubuntu package names); install them" \
         "as root, e.g. sudo apt-get install ${need[*]}, or the tests that need them fail" >&2
fi
