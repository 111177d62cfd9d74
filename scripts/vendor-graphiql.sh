#!/usr/bin/env bash
# Remakes the API explorer's vendored files in worker/src/console/graphiql/ from npm: GraphiQL's
# and React's UMD builds, gzipped (-9 -n: the same bytes every time, so a re-run on the same
# versions changes nothing in git). Run by hand when upgrading; needs node/npm and the registry.
set -euo pipefail

GRAPHIQL=3.8.3   # the last GraphiQL with a UMD build (4.x is ES modules from a CDN)
REACT=18.3.1     # GraphiQL 3 wants React 18

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/worker/src/console/graphiql"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null
for archive in "graphiql-$GRAPHIQL" "react-$REACT" "react-dom-$REACT"; do
    package="${archive%-*}"
    mkdir "$package"
    tar -xzf "$archive.tgz" -C "$package"
done
gzip -9 -n -c graphiql/package/graphiql.min.js >"$out/graphiql.min.js.gz"
gzip -9 -n -c graphiql/package/graphiql.min.css >"$out/graphiql.min.css.gz"
gzip -9 -n -c react/package/umd/react.production.min.js >"$out/react.production.min.js.gz"
gzip -9 -n -c react-dom/package/umd/react-dom.production.min.js >"$out/react-dom.production.min.js.gz"
{
    echo "GraphiQL $GRAPHIQL (graphiql.min.js, graphiql.min.css):"
    cat graphiql/package/LICENSE
    echo
    echo "React $REACT and ReactDOM $REACT (umd/*.production.min.js):"
    cat react/package/LICENSE
} >"$out/LICENSES.txt"
echo "vendored GraphiQL $GRAPHIQL and React $REACT into $out"
