#!/usr/bin/env bash
# Makes PostgreSQL's server binaries (initdb, postgres, createdb) available to the tests, which
# start their own server per test (shared/src/test_util/postgres.rs), and prints the directory
# holding them on stdout (scripts/test.sh exports it as INLET_PG_BIN).
#
# Uses $INLET_PG_BIN when set, else the newest /usr/lib/postgresql/<major>/bin. When neither has
# the binaries, installs Debian's `postgresql` package (PostgreSQL 15 on Debian 12; needs root).
# Idempotent and instant when the binaries are there. No cluster is started or used: the
# package's own `main` cluster is left as the package made it.
set -euo pipefail

# The bin directory with initdb, postgres and createdb, or nothing.
find_bin() {
    local dir
    if [ -n "${INLET_PG_BIN:-}" ]; then
        dir="$INLET_PG_BIN"
    else
        dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    fi
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && [ -x "$dir/createdb" ]; then
        echo "$dir"
    fi
}

bin="$(find_bin)"
if [ -z "$bin" ]; then
    if [ -n "${INLET_PG_BIN:-}" ]; then
        echo "install-postgres: INLET_PG_BIN=$INLET_PG_BIN has no initdb, postgres and createdb" >&2
        exit 1
    fi
    echo "install-postgres: installing Debian's postgresql package" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-postgres: run as root (or apt-get install postgresql) to install PostgreSQL" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    bin="$(find_bin)"
    if [ -z "$bin" ]; then
        echo "install-postgres: postgresql installed, but no /usr/lib/postgresql/*/bin has initdb and postgres" >&2
        exit 1
    fi
fi
echo "install-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') in $bin" >&2
echo "$bin"
