#!/usr/bin/env bash
# Fuzzes the JSON API against its own OpenAPI document with Schemathesis (PyPI).
#
# It starts `herald serve` on a fresh SQLite data directory with an organization, an admin API
# key and a mailbox, then lets Schemathesis generate requests for every operation in
# /api/v1/openapi.json (valid and invalid ones) with the key as `Authorization: Bearer …`, and
# fails on any server error (5xx) or any response the document does not describe: an
# undocumented status code, a wrong content type, or a body that breaks the response schema.
#
# Bounded and reproducible: a fixed seed, a fixed number of examples per operation, one worker;
# a few minutes on 2 cores. Nothing leaves the machine: when it may (root, or `unshare` allowed),
# the server and Schemathesis run in a network namespace of their own with only loopback, so a
# generated URL or SMTP host can reach nothing; otherwise they still talk over 127.0.0.1 only.
#
# Usage: scripts/schemathesis.sh [HERALD_BIN]   (default: target/debug/herald, built first)
# Settings: SCHEMATHESIS_MAX_EXAMPLES (default 50), SCHEMATHESIS_SEED (default 1313).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The version this script was written against; a newer one may add checks (raise it on purpose).
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
SEED="${SCHEMATHESIS_SEED:-1313}"
HERALD_BIN="${1:-$PWD/target/debug/herald}"
VENV="$PWD/target/schemathesis-venv"

if [ -z "${SCHEMATHESIS_NETNS:-}" ]; then
  if [ "$#" = 0 ]; then
    cargo build --locked --bin herald
  fi
  if [ ! -x "$VENV/bin/schemathesis" ] ||
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" != "$SCHEMATHESIS_VERSION" ]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  # Re-run this script inside a network namespace with only loopback, when allowed.
  if command -v ip >/dev/null 2>&1 && unshare --net true 2>/dev/null; then
    exec unshare --net env SCHEMATHESIS_NETNS=1 bash -c \
      'ip link set lo up && exec "$0" "$@"' "$PWD/scripts/schemathesis.sh" "$HERALD_BIN"
  fi
  echo "note: cannot make a network namespace here; running on 127.0.0.1 with the host's network"
fi

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port, chosen by the kernel.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
export HERALD_DATA_DIR="$work/data"
export HERALD_DATABASE_URL="sqlite://$work/data/herald.db"
export HERALD_LISTEN="127.0.0.1:$port"
export HERALD_PUBLIC_URL="$base"
export HERALD_LOG="${HERALD_LOG:-warn}"

"$HERALD_BIN" org add Fuzz >/dev/null
key="$("$HERALD_BIN" apikey add --org Fuzz --role admin --name schemathesis | tail -n 1)"

"$HERALD_BIN" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$base/readyz" 2>/dev/null; then
    break
  fi
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.2
done

# A basic mailbox and an OAuth2 one, so that operations on a mailbox have some to find besides
# random ids. The OAuth2 one's id is handed to its authorization operations (schemathesis.toml):
# building an authorization URL needs no network.
FUZZ_OAUTH_MAILBOX_ID="$(python3 - "$base" "$key" <<'EOF'
import json, sys, urllib.request
base, key = sys.argv[1], sys.argv[2]
def create(body):
    request = urllib.request.Request(f"{base}/api/v1/mailboxes", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=10))["id"]
create({"name": "Support", "auth": "basic", "host": "smtp.fuzz.invalid", "port": 587,
        "security": "starttls", "username": "support@fuzz.invalid", "password": "fuzz-password"})
print(create({"name": "Sales", "auth": "oauth2", "provider": "custom", "host": "smtp.fuzz.invalid",
              "authorization_url": "https://login.fuzz.invalid/authorize",
              "token_url": "https://login.fuzz.invalid/token", "username": "sales@fuzz.invalid",
              "client_id": "fuzz-client", "client_secret": "fuzz-client-secret",
              "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"]}))
EOF
)"
export FUZZ_OAUTH_MAILBOX_ID

# Schemathesis keeps a cache in the directory it runs in: keep it out of the work tree.
repo="$PWD"
report_dir="$repo/target/schemathesis-report"
cd "$work"
status=0
"$VENV/bin/schemathesis" --config-file "$repo/scripts/schemathesis.toml" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  `# Revoking an API key is left out: it finds the run's own key among the listed ones and` \
  `# revokes it, and every later request is 401. The isolation matrix covers that route.` \
  --exclude-operation-id revoke_api_key \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 30 \
  --no-color \
  --output-truncate true \
  --report junit --report-dir "$report_dir" || status=$?

if [ "$status" != 0 ]; then
  echo "--- herald serve log (warnings and errors) ---" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
