#!/usr/bin/env bash
# Installs `promtool` (Prometheus's rule checker and rule unit-test runner) for the alerting-contract tests,
# without touching the system: the host distribution's `prometheus` .deb is fetched with `apt-get download`
# (apt checks it against the host's signed package index) and only usr/bin/promtool is unpacked into
# $SPIRE_PQC_CACHE/promtool-<version>/, linked as $SPIRE_PQC_CACHE/bin/promtool.
#
# Why not `apt-get install prometheus`: the package's postinst creates a system user and starts the
# Prometheus server (`invoke-rc.d prometheus start`, i.e. the SysV init script where systemd is not PID 1),
# which would leave a daemon listening on :9090 on a developer's machine or a CI runner. Unpacking starts
# nothing, changes no system state and needs none of the package's web-asset dependencies.
#
# Idempotent: when $SPIRE_PQC_CACHE/bin/promtool already runs `promtool --version`, it does nothing.
# Runs `apt-get update` once if the host's package lists do not know `prometheus` yet.
set -euo pipefail

CACHE="${SPIRE_PQC_CACHE:-$HOME/.cache/spire-pqc}"
LINK="$CACHE/bin/promtool"

log() { echo "install-promtool: $*"; }
die() {
  echo "install-promtool: error: $*" >&2
  exit 1
}

works() { "$1" --version >/dev/null 2>&1; }

if works "$LINK"; then
  log "already installed: $LINK ($("$LINK" --version 2>&1 | head -1))"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found: this script needs a Debian-based system (apt, dpkg)"
done

mkdir -p "$CACHE/bin"
# Parallel runs sharing a cache must not interleave; the second one finds the finished install.
exec 9>"$CACHE/.install-promtool.lock"
flock 9
if works "$LINK"; then
  log "installed meanwhile by another run: $LINK"
  exit 0
fi

if ! apt-cache show prometheus >/dev/null 2>&1; then
  log "the host's package lists do not know 'prometheus' yet: apt-get update"
  apt-get -q update >/dev/null || die "apt-get update failed"
  apt-cache show prometheus >/dev/null 2>&1 || die "no 'prometheus' package in the host's apt sources"
fi

WORK="$(mktemp -d "$CACHE/.promtool.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
APT_OPTS=(-q)
# As root, apt downloads as the _apt user, who cannot write into a private directory under $HOME.
if [[ "$(id -u)" == 0 ]]; then APT_OPTS+=(-o APT::Sandbox::User=root); fi
(cd "$WORK" && apt-get "${APT_OPTS[@]}" download prometheus >/dev/null) || die "apt-get download prometheus failed"
deb="$(echo "$WORK"/prometheus_*.deb)"
[[ -f "$deb" ]] || die "apt-get download left no prometheus .deb"
version="$(dpkg-deb -f "$deb" Version)"

dpkg-deb -x "$deb" "$WORK/root"
[[ -x "$WORK/root/usr/bin/promtool" ]] || die "prometheus $version has no usr/bin/promtool"
works "$WORK/root/usr/bin/promtool" || die "promtool from prometheus $version does not run on this host"

TARGET="$CACHE/promtool-$version"
rm -rf "$TARGET"
mkdir -p "$TARGET"
cp "$WORK/root/usr/bin/promtool" "$TARGET/promtool"
cp "$WORK/root/usr/share/doc/prometheus/copyright" "$TARGET/copyright" 2>/dev/null || true
echo "prometheus $version sha256:$(sha256sum "$deb" | cut -d' ' -f1)" >"$TARGET/PACKAGE.txt"
ln -sfn "$TARGET/promtool" "$LINK.tmp"
mv -fT "$LINK.tmp" "$LINK"
works "$LINK" || die "$LINK does not run after installation"
log "installed $LINK ($("$LINK" --version 2>&1 | head -1)) from Debian's prometheus $version"
