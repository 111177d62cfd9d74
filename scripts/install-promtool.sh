#!/usr/bin/env bash
# Installs promtool (Debian's `prometheus` package) when it is missing, for the metrics lint test
# (`promtool check metrics` on a live scrape). Prints promtool's path.
set -euo pipefail

if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-promtool: run as root, or apt-get install prometheus, to get promtool" >&2
        exit 1
    fi
    echo "install-promtool: installing Debian's prometheus package for promtool" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus >&2 \
        || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends prometheus >&2; }
fi
command -v promtool
