#!/usr/bin/env bash
# Runs the whole pipeline locally, no Docker: nats-server (JetStream, data in var/nats), a demo
# destination, inlet-ingest and inlet-worker with config/inlet.example.toml. Ctrl-C stops all.
# Prints the URLs and a copy-paste curl of a correctly signed test webhook.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
config="${INLET_CONFIG:-config/inlet.example.toml}"
nats_port="${NATS_PORT:-4222}"

# Before anything starts (a second nats-server would open the same var/nats store): every port
# the example setup listens on must be free, or the message names it.
python3 - "$nats_port" 8080 9180 8090 9181 8091 8099 <<'PY' || exit 1
import socket, sys
names = {0: "nats-server", 1: "inlet-ingest", 2: "inlet-ingest metrics", 3: "inlet-worker",
         4: "inlet-worker metrics", 5: "the development sign-in provider", 6: "the demo destination"}
busy = []
for index, port in enumerate(sys.argv[1:]):
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", int(port))) == 0:
            busy.append(f"  127.0.0.1:{port} ({names[index]})")
if busy:
    print("Inlet cannot start: these ports are already in use (is scripts/run.sh already running?):", file=sys.stderr)
    print("\n".join(busy), file=sys.stderr)
    sys.exit(1)
PY

nats_bin="$(scripts/install-nats-server.sh)"
echo "building inlet-ingest and inlet-worker (first build takes a few minutes)..."
cargo build --release --bins --locked -q

mkdir -p var/nats var/log
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -sd var/nats >var/log/nats.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "Server is ready" var/log/nats.log 2>/dev/null && break
    sleep 0.1
done
grep -q "Server is ready" var/log/nats.log || { echo "nats-server did not start; see var/log/nats.log"; exit 1; }

python3 scripts/demo_sink.py 8099 "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" &
pids+=($!)
scripts/dev-idp.sh >var/log/dev-idp.log 2>&1 &   # development OpenID provider on :8091, loopback only
pids+=($!)
export INLET__CONSOLE__OIDC__ISSUER=http://127.0.0.1:8091 INLET__CONSOLE__OIDC__CLIENT_ID=inlet \
    INLET__CONSOLE__OIDC__CLIENT_SECRET=inlet-dev-client-secret
# The worker discovers the provider at startup: wait for it.
python3 - <<'PY'
import time, urllib.request
for _ in range(600):
    try:
        if urllib.request.urlopen("http://127.0.0.1:8091/.well-known/openid-configuration", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.1)
PY
export INLET__NATS__URL="nats://127.0.0.1:${nats_port}"
target/release/inlet-ingest --config "$config" &
ingest_pid=$!
pids+=($ingest_pid)
target/release/inlet-worker --config "$config" &
worker_pid=$!
pids+=($worker_pid)

# Wait for readiness without assuming curl is installed; stop with a pointer to the error
# (a busy port, an invalid config) as soon as a service exits, instead of printing
# instructions for a pipeline that is down.
ready() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; }
for url in http://127.0.0.1:8080/readyz http://127.0.0.1:8090/readyz; do
    for _ in $(seq 1 300); do
        ready "$url" && continue 2
        if ! kill -0 "$ingest_pid" 2>/dev/null || ! kill -0 "$worker_pid" 2>/dev/null; then
            echo "Inlet did not start: see the inlet-ingest / inlet-worker messages above (e.g. a port already in use)." >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "Inlet did not start: $url did not become ready within 30 s; see the messages above." >&2
    exit 1
done

ts="$(date +%s)"
sign() { python3 -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), (sys.argv[2]+"."+sys.argv[3]).encode(), hashlib.sha256).hexdigest())' whsec_local_stripe_secret "$ts" "$1"; }
body='{"id":"evt_demo_'"$ts"'","object":"event","type":"payment_intent.succeeded","data":{"object":{"amount":2000}}}'
sig="$(sign "$body")"
fail_body='{"id":"evt_demo_fail_'"$ts"'","object":"event","type":"payment_intent.succeeded","data":{"note":"inlet_demo_fail_once"}}'
fail_sig="$(sign "$fail_body")"

cat <<EOT

Inlet is running (Ctrl-C stops everything):
  ingest   http://127.0.0.1:8080/webhooks/{stripe,github,svix,shopify,slack,acme}   health: /healthz /readyz
  metrics  http://127.0.0.1:9180/metrics (ingest)   http://127.0.0.1:9181/metrics (worker)
  worker   http://127.0.0.1:8090/healthz
  nats     nats://127.0.0.1:${nats_port}  (data in var/nats, logs in var/log)
  sink     http://127.0.0.1:8099/events  (demo destination; prints each delivery below)
  console  http://127.0.0.1:8090/console  (sign in with the local development provider as admin@example.com)

Send a signed Stripe test webhook (valid for 5 minutes):

curl -i http://127.0.0.1:8080/webhooks/stripe \\
  -H 'Content-Type: application/json' \\
  -H 'Stripe-Signature: t=${ts},v1=${sig}' \\
  --data-raw '${body}'

A webhook the demo destination rejects once (422): it is dead-lettered at once; replay it from the
console's dead-letter view and watch it arrive:

curl -i http://127.0.0.1:8080/webhooks/stripe \\
  -H 'Content-Type: application/json' \\
  -H 'Stripe-Signature: t=${ts},v1=${fail_sig}' \\
  --data-raw '${fail_body}'

EOT
wait -n "${pids[@]}"
