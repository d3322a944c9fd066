#!/usr/bin/env bash
# Runs the hybrid-echo example end to end: agent, server, one client call, then stops everything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
py="$repo/.venv/bin/python"
work=$(mktemp -d /tmp/hybrid-echo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
sed -e "s|@SOCKET@|$work/agent.sock|" -e "s|@UID@|$(id -u)|" "$here/agent.toml" > "$work/agent.toml"
"$py" -m spire_pqc.cli agent run -c "$work/agent.toml" &
for _ in $(seq 50); do [ -S "$work/agent.sock" ] && break; sleep 0.2; done
export SPIFFE_ENDPOINT_SOCKET="unix://$work/agent.sock"
port="${PORT:-9443}"
"$py" "$here/echo.py" server "127.0.0.1:$port" &
# Wait until the server listens (it first waits for its hybrid SVID from the agent).
for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
"$py" "$here/echo.py" client "127.0.0.1:$port" "hello, post-quantum world"
