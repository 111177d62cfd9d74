#!/usr/bin/env bash
# The project's one test command (README, .ci/run): formatting, lints, every test.
# Installs what the tests need (the pinned nats-server) into git-ignored project folders first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

NATS_SERVER_BIN="$(scripts/install-nats-server.sh)"
export NATS_SERVER_BIN
PROMTOOL_BIN="$(scripts/install-promtool.sh)"
export PROMTOOL_BIN
INLET_PG_BIN="$(scripts/install-postgres.sh)"   # PostgreSQL server binaries (Debian package when missing)
export INLET_PG_BIN
scripts/install-test-tools.sh   # node deps of scripts/e2e (OpenID provider, Chromium driver) and Debian chromium

echo "== deploy files"
python3 scripts/check-compose.py
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
