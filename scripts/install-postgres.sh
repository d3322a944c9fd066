#!/usr/bin/env bash
# Installs PostgreSQL 15 from Debian's packages (postgresql-15) where it is missing: the tests and
# `spire-pqc bench ledger` run private clusters with its initdb/pg_ctl (spire_pqc/bench/postgres.py);
# nothing here creates or starts a cluster. Idempotent: does nothing when initdb and pg_ctl exist.
# Environment: SPIRE_PQC_PG_BINDIR (a PostgreSQL bin directory to use instead).
set -euo pipefail

BINDIR="${SPIRE_PQC_PG_BINDIR:-/usr/lib/postgresql/15/bin}"
log() { echo "install-postgres: $*"; }

if [[ -x "$BINDIR/initdb" && -x "$BINDIR/pg_ctl" ]]; then
  log "already installed: $("$BINDIR/pg_ctl" --version)"
  exit 0
fi
if [[ -n "${SPIRE_PQC_PG_BINDIR:-}" ]]; then
  echo "install-postgres: error: SPIRE_PQC_PG_BINDIR=$BINDIR has no initdb/pg_ctl" >&2
  exit 1
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null || { echo "install-postgres: error: need root (or sudo) for apt-get" >&2; exit 1; }
  SUDO=(sudo)
fi
log "installing postgresql-15 with apt-get"
"${SUDO[@]}" apt-get update -qq
# The package's maintainer scripts may create and start a "main" cluster; the tests never use it.
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql-15
"$BINDIR/pg_ctl" --version
