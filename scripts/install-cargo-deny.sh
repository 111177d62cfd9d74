#!/usr/bin/env bash
# Installs the pinned cargo-deny into the project-local, git-ignored .tools/cargo-deny/ folder,
# built from crates.io with `cargo install --locked` (its own Cargo.lock). Idempotent: does nothing
# when the pinned version is already there; rebuilds only when the binary is missing or another
# version. The build uses a throw-away target dir, never the workspace's target/ (a few minutes
# on 2 cores, once). Prints the binary's path.
set -euo pipefail

CARGO_DENY_VERSION="0.20.2"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/.tools/cargo-deny"
bin="$target/bin/cargo-deny"

if [[ -x "$bin" ]] && "$bin" --version 2>/dev/null | grep -qx "cargo-deny ${CARGO_DENY_VERSION}"; then
    echo "$bin"
    exit 0
fi

echo "installing cargo-deny ${CARGO_DENY_VERSION} into $target (cargo install, a few minutes)" >&2
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
rm -rf "$target"
# From outside the workspace, so that no project .cargo/config applies; --target-dir so that a
# CARGO_TARGET_DIR in the environment does not point the build at the workspace's target/.
(cd "$build" && cargo install --quiet --locked --force --version "=${CARGO_DENY_VERSION}" \
    --root "$target" --target-dir "$build/target" cargo-deny >&2)
if ! "$bin" --version >/dev/null 2>&1; then
    echo "cargo-deny was not installed at $bin" >&2
    exit 1
fi
echo "$bin"
