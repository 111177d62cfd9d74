#!/usr/bin/env bash
# The local development OpenID provider for scripts/run.sh: installs its node dependencies,
# then runs scripts/e2e/provider.mjs (oidc-provider) in the foreground on 127.0.0.1 only.
# Anyone may sign in there as any email address, so it is for local development only; the
# worker accepts a plain-http issuer only on loopback, which keeps it out of production.
#
# It registers one confidential client, exactly as run.sh configures the worker:
#   issuer        http://127.0.0.1:${DEV_IDP_PORT:-8091}
#   client_id     inlet
#   client_secret inlet-dev-client-secret
#   redirect_uri  ${WORKER_PUBLIC_URL:-http://127.0.0.1:8090}/auth/callback
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install-test-tools.sh" --node-only
exec node "$root/scripts/e2e/provider.mjs" --port "${DEV_IDP_PORT:-8091}" \
    --redirect-uri "${WORKER_PUBLIC_URL:-http://127.0.0.1:8090}/auth/callback" \
    --client-id inlet --client-secret inlet-dev-client-secret
