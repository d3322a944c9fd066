#!/usr/bin/env bash
# Runs the hello-world example: a dev-mode agent, the server, one client call; then stops everything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py="$(cd "$here/../.." && pwd)/.venv/bin/python"
work=$(mktemp -d /tmp/hello-world.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
sed -e "s|@SOCKET@|$work/agent.sock|" -e "s|@UID@|$(id -u)|" "$here/agent.toml" > "$work/agent.toml"
"$py" -m spire_pqc.cli agent run -c "$work/agent.toml" &
export PORT="${PORT:-9443}" SPIFFE_ENDPOINT_SOCKET="unix://$work/agent.sock"
"$py" "$here/server.py" &
# The server listens once it has its hybrid SVID from the agent.
for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
"$py" "$here/client.py"
