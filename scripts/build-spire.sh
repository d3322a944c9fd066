#!/usr/bin/env bash
# Builds spire-server and spire-agent from SPIRE's Go module into a cache the tests reuse.
# Idempotent: does nothing when the pinned version is already built there.
# Facts: go.mod of spiffe/spire v1.15.3 needs Go >= 1.26.6 (its .go-version); cgo is required for the
# sqlite datastore (spiffe/spire:pkg/server/datastore/sqlstore/sqlite_no_cgo.go@v1.15.3).
set -euo pipefail
SPIRE_VERSION="${SPIRE_VERSION:-v1.15.3}"
CACHE="${SPIRE_PQC_CACHE:-$HOME/.cache/spire-pqc}"
BIN="$CACHE/spire-$SPIRE_VERSION/bin"
if [[ -x "$BIN/spire-server" && -x "$BIN/spire-agent" ]]; then
  echo "spire $SPIRE_VERSION already built in $BIN"
  exit 0
fi
command -v go >/dev/null || { echo "build-spire: go toolchain not found (need Go >= 1.26.6)" >&2; exit 1; }
mkdir -p "$BIN.partial"
echo "building spire-server and spire-agent $SPIRE_VERSION (go install, cgo on) into $BIN"
# The proxy serves SPIRE by exact version but lists none, so `go install pkg@version` is refused;
# tools/spire/go.mod pins the release (and go.sum its whole dependency tree) instead.
cd "$(dirname "$0")/../tools/spire"
grep -q "github.com/spiffe/spire $SPIRE_VERSION" go.mod || { echo "build-spire: tools/spire/go.mod does not pin $SPIRE_VERSION" >&2; exit 1; }
CGO_ENABLED=1 GOBIN="$PWD/.partial-bin" GOFLAGS="-buildvcs=false -mod=mod" \
  go install github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
mv .partial-bin/* "$BIN.partial"/ && rmdir .partial-bin
rm -rf "$BIN"; mv "$BIN.partial" "$BIN"
"$BIN/spire-server" --version 2>&1 || true
