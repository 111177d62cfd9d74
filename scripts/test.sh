#!/usr/bin/env bash
# The project's one test command (README, .ci/run): formatting, lints, every test.
# Installs what the tests need (the pinned nats-server and cargo-deny) into git-ignored project
# folders first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

NATS_SERVER_BIN="$(scripts/install-nats-server.sh)"
export NATS_SERVER_BIN
PROMTOOL_BIN="$(scripts/install-promtool.sh)"
export PROMTOOL_BIN
AMTOOL_BIN="$(scripts/install-amtool.sh)"   # check-compose.py checks the Alertmanager config with it
export AMTOOL_BIN
CARGO_DENY_BIN="$(scripts/install-cargo-deny.sh)"   # built from crates.io once (~3 min on 2 cores)
INLET_PG_BIN="$(scripts/install-postgres.sh)"   # PostgreSQL server binaries (Debian package when missing)
export INLET_PG_BIN
scripts/install-test-tools.sh   # node deps of scripts/e2e (OpenID provider, Chromium driver) and Debian chromium

echo "== deploy files"
python3 scripts/check-compose.py
echo "== scripts/run.sh (options, readiness checks; nothing built or started)"
scripts/test-run-sh.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo deny"
"$CARGO_DENY_BIN" --locked check licenses bans sources
# Advisories need the RustSec database, a git clone from GitHub that this machine may not reach:
# they are checked when it can be fetched within a minute, and skipped, saying why, when not.
deny_fetch_rc=0
deny_fetch="$(timeout 60 "$CARGO_DENY_BIN" fetch db 2>&1)" || deny_fetch_rc=$?
if [ "$deny_fetch_rc" -eq 0 ]; then
    timeout 300 "$CARGO_DENY_BIN" --locked check advisories
else
    why="timed out after 60 s"
    [ "$deny_fetch_rc" -eq 124 ] || why="$(printf '%s\n' "$deny_fetch" | grep -m1 '^fatal:' || printf '%s\n' "$deny_fetch" | tail -n1)"
    echo "cargo deny: advisories SKIPPED, the RustSec advisory database could not be fetched: $why"
fi
echo "== cargo test"
cargo test --workspace --locked
# The whole worker integration suite again on PostgreSQL (a server per test); the few tests about
# SQLite itself (disk full, its file lock) live under `sqlite_only` and ran above, as did
# `several_workers`, which always runs on PostgreSQL.
echo "== worker integration suite on PostgreSQL"
INLET_TEST_STORE=postgres cargo test --locked -p inlet-worker --test it -- --skip sqlite_only --skip several_workers --skip upgrade
