#!/usr/bin/env bash
# Installs amtool (Debian's `prometheus-alertmanager` package) when it is missing, for the
# Alertmanager config check of scripts/check-compose.py (`amtool check-config`, routing tests).
# Prints amtool's path. The package's alertmanager service is not started (no init system in
# containers; on a host with systemd, `systemctl disable --now prometheus-alertmanager` if unwanted).
set -euo pipefail

if ! command -v amtool >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-amtool: run as root, or apt-get install prometheus-alertmanager, to get amtool" >&2
        exit 1
    fi
    echo "install-amtool: installing Debian's prometheus-alertmanager package for amtool" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus-alertmanager >&2 \
        || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends prometheus-alertmanager >&2; }
fi
command -v amtool
