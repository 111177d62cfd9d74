#!/usr/bin/env bash
# Runs the whole pipeline locally, no Docker: nats-server (JetStream, data in var/nats), a demo
# destination, the development sign-in provider (when Node.js >= 20 is there), inlet-ingest and
# inlet-worker with config/inlet.example.toml. Ctrl-C stops all. Prints the URLs and a
# copy-paste curl of a correctly signed test webhook. `scripts/run.sh --help` for the options.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() {
    cat <<'EOT'
Usage: scripts/run.sh [--no-login] [--print-ports]

Builds the release binaries and runs nats-server, a demo destination, the development OpenID
provider (console sign-in; needs Node.js >= 20), inlet-ingest and inlet-worker. Ctrl-C stops all.

  --no-login     do not start the development sign-in provider (also automatic without Node.js
                 >= 20): the console has no sign-in; an admin API bootstrap token is printed
  --print-ports  print the ports and config overrides this run would use, and exit
  -h, --help     this text

Ports (all on 127.0.0.1). INLET_BASE_PORT=N moves all seven to N..N+6 in this order; each
variable below overrides one (default without INLET_BASE_PORT in brackets):
  NATS_PORT            nats-server                  (4222)   N
  INGEST_PORT          inlet-ingest webhooks        (8080)   N+1
  INGEST_METRICS_PORT  inlet-ingest /metrics        (9180)   N+2
  WORKER_PORT          inlet-worker API, console    (8090)   N+3
  WORKER_METRICS_PORT  inlet-worker /metrics        (9181)   N+4
  DEV_IDP_PORT         development sign-in provider (8091)   N+5
  SINK_PORT            demo destination             (8099)   N+6
They reach the config through INLET__* overrides (nats.url, ingest.listen, ingest.admin_listen,
worker.listen, worker.admin_listen, console.public_url, console.oidc.issuer; with the example
config also destinations[0].url, the demo destination).

Other variables: INLET_CONFIG (default config/inlet.example.toml), INLET__SECTION__KEY overrides
(e.g. INLET__CONSOLE__BOOTSTRAP_TOKEN).
EOT
}

login=1
print_ports=0
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --no-login) login=0 ;;
        --print-ports) print_ports=1 ;;
        *) echo "scripts/run.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "scripts/run.sh: $*" >&2; exit 2; }
is_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

config="${INLET_CONFIG:-config/inlet.example.toml}"
[ -f "$config" ] || die "config file '$config' not found (INLET_CONFIG)"

defaults=(4222 8080 9180 8090 9181 8091 8099)
if [ -n "${INLET_BASE_PORT:-}" ]; then
    [[ "$INLET_BASE_PORT" =~ ^[0-9]{1,5}$ ]] && ((10#$INLET_BASE_PORT >= 1 && 10#$INLET_BASE_PORT <= 65529)) ||
        die "INLET_BASE_PORT must be a number from 1 to 65529 (it and the next 6 ports are used), not '$INLET_BASE_PORT'"
    base=$((10#$INLET_BASE_PORT))
    defaults=($base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $((base + 5)) $((base + 6)))
fi
port_vars=(NATS_PORT INGEST_PORT INGEST_METRICS_PORT WORKER_PORT WORKER_METRICS_PORT DEV_IDP_PORT SINK_PORT)
port_names=("nats-server" "inlet-ingest" "inlet-ingest metrics" "inlet-worker" "inlet-worker metrics"
    "the development sign-in provider" "the demo destination")
ports=()
for i in "${!port_vars[@]}"; do
    value="${!port_vars[$i]:-${defaults[$i]}}"
    is_port "$value" || die "${port_vars[$i]} must be a port number from 1 to 65535, not '$value'"
    ports+=($((10#$value)))
done
nats_port=${ports[0]} ingest_port=${ports[1]} ingest_metrics_port=${ports[2]} worker_port=${ports[3]}
worker_metrics_port=${ports[4]} idp_port=${ports[5]} sink_port=${ports[6]}
dup="$(printf '%s\n' "${ports[@]}" | sort | uniq -d | head -n1)"
[ -z "$dup" ] || die "port $dup is given to two components; each of the 7 needs its own (--print-ports)"

# Without Node.js >= 20 there is no development sign-in provider: run without console sign-in.
no_login_reason=""
if [ "$login" = 0 ]; then
    no_login_reason="--no-login"
elif ! command -v node >/dev/null 2>&1; then
    login=0 no_login_reason="Node.js is not installed (the development sign-in provider needs Node.js >= 20)"
elif node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)" && ((node_major < 20)); then
    login=0 no_login_reason="Node.js $(node --version) is older than 20 (the development sign-in provider needs >= 20)"
fi

export INLET__NATS__URL="nats://127.0.0.1:${nats_port}"
export INLET__INGEST__LISTEN="127.0.0.1:${ingest_port}" INLET__INGEST__ADMIN_LISTEN="127.0.0.1:${ingest_metrics_port}"
export INLET__WORKER__LISTEN="127.0.0.1:${worker_port}" INLET__WORKER__ADMIN_LISTEN="127.0.0.1:${worker_metrics_port}"
export INLET__CONSOLE__PUBLIC_URL="http://127.0.0.1:${worker_port}"
if [ "$config" = config/inlet.example.toml ]; then
    export INLET__DESTINATIONS__0__URL="http://127.0.0.1:${sink_port}/events"   # demo-sink
fi
if [ "$login" = 1 ]; then
    export INLET__CONSOLE__OIDC__ISSUER="http://127.0.0.1:${idp_port}" INLET__CONSOLE__OIDC__CLIENT_ID=inlet \
        INLET__CONSOLE__OIDC__CLIENT_SECRET=inlet-dev-client-secret
fi
bootstrap_made=0
if [ "$login" = 0 ] && [ -z "${INLET__CONSOLE__BOOTSTRAP_TOKEN:-}" ]; then
    # One admin API token for this run only (not stored anywhere): the way in without sign-in.
    INLET__CONSOLE__BOOTSTRAP_TOKEN="run-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
    export INLET__CONSOLE__BOOTSTRAP_TOKEN
    bootstrap_made=1
fi

if [ "$print_ports" = 1 ]; then
    for i in "${!port_vars[@]}"; do printf '%-20s %5s  %s\n' "${port_vars[$i]}" "${ports[$i]}" "${port_names[$i]}"; done
    echo "console sign-in: $([ "$login" = 1 ] && echo "development provider" || echo "off ($no_login_reason)")"
    env | grep -E '^INLET__(NATS__URL|INGEST__|WORKER__|CONSOLE__PUBLIC_URL|CONSOLE__OIDC__ISSUER|DESTINATIONS__)' | sort
    exit 0
fi

# Before anything starts (a second nats-server would open the same var/nats store): every port
# this run listens on must be free, or the message names it. Checked again after the build.
port_args=()
for i in "${!ports[@]}"; do
    if [ "$login" = 1 ] || [ "$i" != 5 ]; then port_args+=("${port_names[$i]} (${port_vars[$i]})=${ports[$i]}"); fi
done
python3 scripts/run_check.py free "${port_args[@]}"

nats_bin="$(scripts/install-nats-server.sh)"
echo "building inlet-ingest and inlet-worker (release; the first build takes ~10 min on 2 cores)..."
cargo build --release --bins --locked
python3 scripts/run_check.py free "${port_args[@]}"

mkdir -p var/nats var/log
pids=()
declare -A name_of log_of
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
started() { pids+=("$1"); name_of[$1]="$2"; log_of[$1]="$3"; }
# Waits until the component is up and is the process listening on its ports; otherwise names it,
# shows why (its log) and stops everything.
ready() { python3 scripts/run_check.py ready "${name_of[$1]}" "$1" "${log_of[$1]}" "$2" "$3" ${4:+"$4"} || exit 1; }

"$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -sd var/nats >var/log/nats.log 2>&1 &
started $! nats-server var/log/nats.log
ready $! 15 "$nats_port"

# The demo destination prints each delivery here (and into var/log/demo-sink.log).
python3 scripts/demo_sink.py "$sink_port" "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" > >(tee var/log/demo-sink.log) 2>&1 &
started $! "the demo destination (scripts/demo_sink.py)" var/log/demo-sink.log
ready $! 15 "$sink_port"

if [ "$login" = 1 ]; then
    # Development OpenID provider, loopback only; its first start installs its Node packages.
    [ -f scripts/e2e/node_modules/.package-lock.json ] ||
        echo "starting the development sign-in provider (first run: npm ci in scripts/e2e, log in var/log/dev-idp.log)..."
    DEV_IDP_PORT="$idp_port" WORKER_PUBLIC_URL="http://127.0.0.1:${worker_port}" scripts/dev-idp.sh >var/log/dev-idp.log 2>&1 &
    started $! "the development sign-in provider (scripts/dev-idp.sh)" var/log/dev-idp.log
    # The worker discovers the provider at startup: wait for it.
    python3 scripts/run_check.py ready "${name_of[$!]}" $! "${log_of[$!]}" 300 "$idp_port" \
        "http://127.0.0.1:${idp_port}/.well-known/openid-configuration" ||
        { echo "(scripts/run.sh --no-login runs without it: no console sign-in, an API token instead)" >&2; exit 1; }
fi

target/release/inlet-ingest --config "$config" > >(tee var/log/ingest.log) 2>&1 &
ingest_pid=$!
started $ingest_pid inlet-ingest var/log/ingest.log
target/release/inlet-worker --config "$config" > >(tee var/log/worker.log) 2>&1 &
worker_pid=$!
started $worker_pid inlet-worker var/log/worker.log
# Readiness needs NATS (nats.startup_timeout, 30 s in the example) and the stream.
ready $ingest_pid 60 "$ingest_port,$ingest_metrics_port" "http://127.0.0.1:${ingest_port}/readyz"
ready $worker_pid 60 "$worker_port,$worker_metrics_port" "http://127.0.0.1:${worker_port}/readyz"

ts="$(date +%s)"
sign() { python3 -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), (sys.argv[2]+"."+sys.argv[3]).encode(), hashlib.sha256).hexdigest())' whsec_local_stripe_secret "$ts" "$1"; }
body='{"id":"evt_demo_'"$ts"'","object":"event","type":"payment_intent.succeeded","data":{"object":{"amount":2000}}}'
sig="$(sign "$body")"
fail_body='{"id":"evt_demo_fail_'"$ts"'","object":"event","type":"payment_intent.succeeded","data":{"note":"inlet_demo_fail_once"}}'
fail_sig="$(sign "$fail_body")"

if [ "$login" = 1 ]; then
    console_line="console  http://127.0.0.1:${worker_port}/console  (sign in with the local development provider as admin@example.com)"
else
    console_line="console  http://127.0.0.1:${worker_port}/console  has NO sign-in this run: ${no_login_reason}.
           For console sign-in install Node.js >= 20 (https://nodejs.org) and start scripts/run.sh again."
fi
cat <<EOT

Inlet is running (Ctrl-C stops everything):
  ingest   http://127.0.0.1:${ingest_port}/webhooks/{stripe,github,svix,shopify,slack,acme}   health: /healthz /readyz
  metrics  http://127.0.0.1:${ingest_metrics_port}/metrics (ingest)   http://127.0.0.1:${worker_metrics_port}/metrics (worker)
  worker   http://127.0.0.1:${worker_port}/healthz   GraphQL API: http://127.0.0.1:${worker_port}/graphql
  nats     nats://127.0.0.1:${nats_port}  (data in var/nats, logs in var/log)
  sink     http://127.0.0.1:${sink_port}/events  (demo destination; prints each delivery below)
  ${console_line}
EOT
if [ "$bootstrap_made" = 1 ]; then
    cat <<EOT

Admin API token for this run only (the bootstrap token; it ends with this run):
  export INLET__CONSOLE__BOOTSTRAP_TOKEN=${INLET__CONSOLE__BOOTSTRAP_TOKEN}
Create a lasting API token with it (README, quickstart step 5):
  curl -s http://127.0.0.1:${worker_port}/graphql -H "authorization: Bearer \$INLET__CONSOLE__BOOTSTRAP_TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"query":"mutation { createApiToken(name: \"quickstart\", role: OPERATOR) { token } }"}'
EOT
fi
cat <<EOT

Send a signed Stripe test webhook (valid for 5 minutes):

curl -i http://127.0.0.1:${ingest_port}/webhooks/stripe \\
  -H 'Content-Type: application/json' \\
  -H 'Stripe-Signature: t=${ts},v1=${sig}' \\
  --data-raw '${body}'

A webhook the demo destination rejects once (422): it is dead-lettered at once; replay it from the
console's dead-letter view (or the API's replay mutation) and watch it arrive:

curl -i http://127.0.0.1:${ingest_port}/webhooks/stripe \\
  -H 'Content-Type: application/json' \\
  -H 'Stripe-Signature: t=${ts},v1=${fail_sig}' \\
  --data-raw '${fail_body}'

An event no route matches (e.g. a Stripe customer.created) is stored but not delivered; the
worker logs "no route matches this event" with its source and type.

EOT

# Any component that exits now is named, with why, and everything stops.
status=0
wait -n -p died "${pids[@]}" || status=$?
echo >&2
echo "Inlet stopped: ${name_of[$died]} exited (status $status). Last lines of ${log_of[$died]}:" >&2
tail -n 15 "${log_of[$died]}" | sed 's/^/  | /' >&2
exit 1
