#!/usr/bin/env bash
# Checks the running API against its own OpenAPI document with schemathesis
# (PyPI; scripts/install-test-deps.sh installs it):
#   - starts target/debug/facteur (built by the test step; FACTEUR_BIN
#     overrides) on a free loopback port, with a temporary data directory, a
#     random API key, and delivery.relay to a loopback port nothing listens
#     on, so that no generated message leaves the machine;
#   - runs `schemathesis run http://127.0.0.1:PORT/openapi.json` with the
#     checks not_a_server_error and response_schema_conformance, at most
#     SCHEMATHESIS_MAX_EXAMPLES (default 50) examples per operation, the seed
#     SCHEMATHESIS_SEED when set (schemathesis prints the one it used);
#   - fails if a check fails, schemathesis errors, or facteur dies or panics.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
bin=${FACTEUR_BIN:-target/debug/facteur}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-50}

say() { printf 'schemathesis.sh: %s\n' "$*" >&2; }

if [[ ! -x $bin ]]; then
  say "$bin is not built: run cargo build first"
  exit 1
fi
if command -v schemathesis >/dev/null 2>&1; then
  st=(schemathesis)
elif "$PYTHON" -c 'import schemathesis' >/dev/null 2>&1; then
  st=("$PYTHON" -m schemathesis.cli)
else
  say "schemathesis is not installed: run scripts/install-test-deps.sh"
  exit 1
fi

# A free loopback port (bound, then released).
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tmp=$(mktemp -d -t facteur-schemathesis.XXXXXX)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(free_port)
relay_port=$(free_port)
key=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')
cat >"$tmp/facteur.toml" <<TOML
[api]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
keys = ["$key"]

[spool]
data_dir = "$tmp/data"

[delivery]
# Nothing listens there: every generated message is deferred, none leaves.
relay = "127.0.0.1:$relay_port"
connect_timeout = "1s"
TOML

# Only this file configures it: no FACTEUR_* from the environment.
(
  unset "${!FACTEUR_@}"
  exec "$bin" serve --config "$tmp/facteur.toml"
) >"$tmp/facteur.log" 2>&1 &
pid=$!

url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    say "facteur exited before it was ready:"
    tail -n 40 "$tmp/facteur.log" >&2
    exit 1
  fi
  if "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen('$url/readyz', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.2
done

args=(run "$url/openapi.json"
  --checks not_a_server_error,response_schema_conformance
  --max-examples "$max_examples"
  # A health check of the data generator, not of the API: a form body with
  # one fixed field (RFC 8058 one-click) leaves hypothesis little to vary.
  --suppress-health-check filter_too_much
  --header "Authorization: Bearer $key")
if [[ -n ${SCHEMATHESIS_SEED:-} ]]; then
  args+=(--seed "$SCHEMATHESIS_SEED")
fi

say "facteur on $url; schemathesis with at most $max_examples examples per operation"
# Run from the temporary directory: schemathesis keeps its example database
# in ./.schemathesis, which must not land in the repository.
status=0
hooks_dir=$PWD/scripts
(
  cd "$tmp"
  SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$hooks_dir${PYTHONPATH:+:$PYTHONPATH}" \
    exec "${st[@]}" "${args[@]}"
) || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
  say "facteur died during the run:"
  tail -n 40 "$tmp/facteur.log" >&2
  status=1
elif grep -q 'panicked' "$tmp/facteur.log"; then
  say "facteur panicked during the run:"
  grep -A5 'panicked' "$tmp/facteur.log" | head -n 40 >&2
  status=1
fi
if ((status)); then
  say "FAILED (exit $status)"
else
  say "ok"
fi
exit "$status"
