#!/usr/bin/env bash
# Checks scripts/run.sh without building or starting anything (a few seconds; run by
# scripts/test.sh): its syntax, --help, the port overrides (INLET_BASE_PORT and one variable per
# port, refused when invalid or shared), and scripts/run_check.py telling our listener from
# another process's, a dead component from a slow one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
failures=0
check() {   # check DESCRIPTION EXPECTED_STATUS COMMAND... ; stdout+stderr in $out
    local description="$1" expected="$2" status=0
    shift 2
    out="$("$@" 2>&1)" || status=$?
    if [ "$status" != "$expected" ]; then
        echo "FAIL: $description: exit $status, expected $expected; output:" >&2
        printf '%s\n' "$out" | sed 's/^/  | /' >&2
        failures=$((failures + 1))
    fi
}
contains() {   # contains DESCRIPTION TEXT (in the last $out)
    if ! grep -qF -- "$2" <<<"$out"; then
        echo "FAIL: $1: output lacks '$2'; output:" >&2
        printf '%s\n' "$out" | sed 's/^/  | /' >&2
        failures=$((failures + 1))
    fi
}

check "syntax" 0 bash -n scripts/run.sh
check "--help" 0 scripts/run.sh --help
contains "--help" "INLET_BASE_PORT"
check "unknown argument" 2 scripts/run.sh --bogus

check "defaults" 0 env -u INLET_BASE_PORT -u NATS_PORT -u SINK_PORT scripts/run.sh --print-ports
for expected in "NATS_PORT             4222" "INGEST_PORT           8080" "WORKER_PORT           8090" \
    "SINK_PORT             8099" "INLET__INGEST__LISTEN=127.0.0.1:8080" "INLET__NATS__URL=nats://127.0.0.1:4222"; do
    contains "defaults" "$expected"
done

check "base port" 0 env INLET_BASE_PORT=5100 SINK_PORT=5199 scripts/run.sh --print-ports
for expected in "NATS_PORT             5100" "INGEST_PORT           5101" "INGEST_METRICS_PORT   5102" \
    "WORKER_PORT           5103" "WORKER_METRICS_PORT   5104" "DEV_IDP_PORT          5105" "SINK_PORT             5199" \
    "INLET__NATS__URL=nats://127.0.0.1:5100" "INLET__INGEST__LISTEN=127.0.0.1:5101" \
    "INLET__INGEST__ADMIN_LISTEN=127.0.0.1:5102" "INLET__WORKER__LISTEN=127.0.0.1:5103" \
    "INLET__WORKER__ADMIN_LISTEN=127.0.0.1:5104" "INLET__CONSOLE__PUBLIC_URL=http://127.0.0.1:5103" \
    "INLET__DESTINATIONS__0__URL=http://127.0.0.1:5199/events"; do
    contains "base port" "$expected"
done
check "--no-login" 0 env INLET_BASE_PORT=5100 scripts/run.sh --no-login --print-ports
contains "--no-login" "console sign-in: off (--no-login)"
if grep -q OIDC__ISSUER <<<"$out"; then echo "FAIL: --no-login still sets the OIDC issuer" >&2; failures=$((failures + 1)); fi

check "base port too high" 2 env INLET_BASE_PORT=65530 scripts/run.sh --print-ports
check "base port not a number" 2 env INLET_BASE_PORT=80a scripts/run.sh --print-ports
check "port out of range" 2 env WORKER_PORT=70000 scripts/run.sh --print-ports
check "two components on one port" 2 env INLET_BASE_PORT=5100 SINK_PORT=5101 scripts/run.sh --print-ports
contains "two components on one port" "port 5101 is given to two components"

# run_check.py against real sockets: a listener of ours, another process's, a dead process.
python3 - <<'PY' || failures=$((failures + 1))
import os, socket, subprocess, sys, tempfile, time

def run(*args):
    return subprocess.run([sys.executable, "scripts/run_check.py", *map(str, args)], capture_output=True, text=True)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
log.write("line one\nthe reason it failed\n")
log.close()
port = free_port()
listener = subprocess.Popen([sys.executable, "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(30)"])
other = subprocess.Popen(["sleep", "30"])
errors = []
try:
    for _ in range(50):
        if run("free", f"x={port}").returncode == 1:
            break
        time.sleep(0.1)
    busy = run("free", f"the thing (THING_PORT)={port}")
    if busy.returncode != 1 or f"127.0.0.1:{port} (the thing (THING_PORT))" not in busy.stderr:
        errors.append(f"free: a busy port is not named: {busy}")
    if run("free", f"x={free_port()}").returncode != 0:
        errors.append("free: a free port is called busy")
    ours = run("ready", "thing", listener.pid, log.name, 5, port)
    if ours.returncode != 0:
        errors.append(f"ready: our own listener is not accepted: {ours}")
    if os.path.exists("/proc/net/tcp"):
        foreign = run("ready", "thing", other.pid, log.name, 5, port)
        if foreign.returncode != 1 or "is not the process listening on" not in foreign.stderr or "the reason it failed" not in foreign.stderr:
            errors.append(f"ready: another process's listener is not refused: {foreign}")
    other.kill()
    other.wait()
    dead = run("ready", "thing", other.pid, log.name, 5, free_port())
    if dead.returncode != 1 or "thing exited" not in dead.stderr or "the reason it failed" not in dead.stderr:
        errors.append(f"ready: a dead process is not reported with its log: {dead}")
    slow = run("ready", "thing", listener.pid, log.name, 0.3, free_port())
    if slow.returncode != 1 or "is not listening on" not in slow.stderr:
        errors.append(f"ready: a timeout is not reported: {slow}")
finally:
    listener.kill()
    other.kill()
    os.unlink(log.name)
for error in errors:
    print("FAIL:", error, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

if [ "$failures" -gt 0 ]; then
    echo "scripts/test-run-sh.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "scripts/test-run-sh.sh: run.sh options and readiness checks ok"
