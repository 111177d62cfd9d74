#!/usr/bin/env bash
# Installs what the operator-plane tests need, idempotently, into git-ignored places:
#   - scripts/e2e/node_modules (oidc-provider, jose, playwright-core) with `npm ci` from the
#     committed package-lock.json, when missing or older than the lock;
#   - Debian's chromium (/usr/bin/chromium) for the console test, when missing (needs root);
#   - PyYAML for scripts/check-compose.py into .tools/python, when the interpreter lacks it.
# Playwright never downloads a browser here: the test points it at /usr/bin/chromium.
# `--node-only` skips chromium (scripts/run.sh needs only the development OpenID provider).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
e2e="$root/scripts/e2e"

command -v node >/dev/null || { echo "install-test-tools: node (>= 20) is required" >&2; exit 1; }
if [ ! -f "$e2e/node_modules/.package-lock.json" ] || [ "$e2e/package-lock.json" -nt "$e2e/node_modules/.package-lock.json" ]; then
    echo "install-test-tools: npm ci in scripts/e2e" >&2
    (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

if [ "${1:-}" != "--node-only" ] && ! PYTHONPATH="$root/.tools/python" python3 -c "import yaml" 2>/dev/null; then
    echo "install-test-tools: pip install PyYAML into .tools/python" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$root/.tools/python" "PyYAML==6.0.3" >&2
fi

if [ "${1:-}" != "--node-only" ] && [ ! -x /usr/bin/chromium ]; then
    echo "install-test-tools: installing Debian chromium" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-tools: run as root (or apt-get install chromium) to install chromium" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq chromium >&2
fi
