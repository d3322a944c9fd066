#!/usr/bin/env bash
# Installs an OpenSSL >= 3.5 command line for the interop tests and `spire-pqc bench crypto`, without touching
# the system: Debian 13 (trixie) packages are fetched with a *private* apt configuration (own sources list,
# lists, cache and status file; the system's apt sources are never changed and nothing is installed with dpkg),
# their signatures are checked by apt against the Debian archive keyring, and the .debs are unpacked with
# `dpkg-deb -x` into $SPIRE_PQC_CACHE/openssl-trixie. The wrapper $SPIRE_PQC_CACHE/bin/openssl35 starts trixie's
# openssl through trixie's own dynamic loader, so trixie's libc and libssl run beside the host's older ones
# (`ld-linux-x86-64.so.2 --library-path <trixie libs> openssl`: the host's libc is never replaced).
#
# Idempotent: when the wrapper already works and reports OpenSSL >= 3.5 with ML-KEM-768, ML-DSA-65 and
# X25519MLKEM768, it does nothing. Environment: SPIRE_PQC_CACHE (default ~/.cache/spire-pqc),
# SPIRE_PQC_DEBIAN_MIRROR (default http://deb.debian.org), SPIRE_PQC_DEBIAN_KEYRING (default: the system's
# debian-archive-keyring; if it lacks the trixie keys, bookworm's current debian-archive-keyring package is
# fetched, itself verified by the system keyring, and its keyring file is used instead).
set -euo pipefail

CACHE="${SPIRE_PQC_CACHE:-$HOME/.cache/spire-pqc}"
ROOT="$CACHE/openssl-trixie"
WRAPPER="$CACHE/bin/openssl35"
MIRROR="${SPIRE_PQC_DEBIAN_MIRROR:-http://deb.debian.org}"
SYSTEM_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
KEYRING="${SPIRE_PQC_DEBIAN_KEYRING:-$SYSTEM_KEYRING}"
SUITE=trixie
# openssl needs libssl3t64; libssl3t64 needs trixie's libc6 (>= 2.38; bookworm has 2.36), libzstd1 and zlib1g.
# libssl3t64 also depends on openssl-provider-legacy, the only module in ossl-modules/ (the default provider is
# built into libcrypto), so OPENSSL_MODULES points at trixie's legacy provider rather than at nothing.
# The closure is checked after unpacking (every library must resolve inside the tree, see check_closure).
PACKAGES=(openssl libssl3t64 openssl-provider-legacy libc6 libzstd1 zlib1g)

log() { echo "install-openssl: $*"; }
die() {
  echo "install-openssl: error: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------------------
# Checks

# Prints the version line and returns 0 when $1 is a working OpenSSL >= 3.5 with the algorithms we need.
check_openssl() {
  local exe="$1" version
  [[ -x "$exe" ]] || return 1
  version="$("$exe" version 2>/dev/null)" || return 1
  [[ "$version" =~ ^OpenSSL\ ([0-9]+)\.([0-9]+)\. ]] || return 1
  local major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
  ((major > 3 || (major == 3 && minor >= 5))) || return 1
  "$exe" list -kem-algorithms 2>/dev/null | grep -q 'ML-KEM-768' || return 1
  "$exe" list -signature-algorithms 2>/dev/null | grep -q 'ML-DSA-65' || return 1
  "$exe" list -tls-groups 2>/dev/null | grep -q 'X25519MLKEM768' || return 1
  echo "$version"
}

if version="$(check_openssl "$WRAPPER")"; then
  log "already installed: $WRAPPER ($version); nothing to do"
  exit 0
fi

# ---------------------------------------------------------------------------------------------------------
# Preconditions

for tool in apt-get dpkg dpkg-deb flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found: this script needs a Debian-based system (apt, dpkg)"
done
case "$(dpkg --print-architecture)" in
  amd64) TRIPLET=x86_64-linux-gnu LOADER=ld-linux-x86-64.so.2 ;;
  arm64) TRIPLET=aarch64-linux-gnu LOADER=ld-linux-aarch64.so.1 ;;
  *) die "unsupported architecture $(dpkg --print-architecture) (amd64 and arm64 are supported)" ;;
esac
ARCH="$(dpkg --print-architecture)"
[[ -r "$KEYRING" ]] || die "keyring $KEYRING not readable; install debian-archive-keyring or set SPIRE_PQC_DEBIAN_KEYRING"

mkdir -p "$CACHE/bin"
# Two concurrent runs (parallel CI jobs sharing a cache) must not interleave; the second one then finds the
# finished install and exits early.
exec 9>"$CACHE/.install-openssl.lock"
flock 9
if version="$(check_openssl "$WRAPPER")"; then
  log "installed meanwhile by another run: $WRAPPER ($version)"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.openssl-trixie.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------------------
# Private apt: every state, list and cache path points into $WORK; the system's sources are not read
# (SourceParts=/dev/null) and its dpkg status is not used (empty status file), so nothing here changes or
# depends on the host's package state. apt.conf.d is still read, so a proxy configured there keeps working.

APT_OPTS=()
apt_setup() { # $1 = name of the private apt tree, $2... = sources.list lines
  local dir="$WORK/apt-$1"
  shift
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc" "$dir/state"
  printf '%s\n' "$@" >"$dir/etc/sources.list"
  : >"$dir/state/status"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$dir/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
    -o "Dir::State=$dir/state" -o "Dir::State::Lists=$dir/lists" -o "Dir::State::status=$dir/state/status"
    -o "Dir::Cache=$dir/cache" -o "APT::Architecture=$ARCH" -o "APT::Architectures::=$ARCH"
    -o Acquire::Languages=none -o APT::Get::List-Cleanup=false
  )
  # As root, apt drops to the _apt user for downloads, which cannot write into a private directory under
  # $HOME; the downloads are still verified against the signed Release file either way.
  if [[ "$(id -u)" == 0 ]]; then APT_OPTS+=(-o APT::Sandbox::User=root); fi
}

# Runs `apt-get update` and returns 0 only when every InRelease file passed signature verification.
# apt moves an index into Dir::State::Lists only after gpgv accepted it, so a verified InRelease is proof.
apt_update_verified() { # $1 = name of the private apt tree, $2 = number of suites expected
  local dir="$WORK/apt-$1" out
  if ! out="$(apt-get "${APT_OPTS[@]}" -q update 2>&1)"; then
    echo "$out" | sed 's/^/  apt: /' >&2
    return 1
  fi
  local count
  count="$(find "$dir/lists" -maxdepth 1 -name '*_InRelease' | wc -l)"
  if [[ "$count" -lt "$2" ]]; then
    echo "$out" | sed 's/^/  apt: /' >&2
    return 1
  fi
}

# `target=Packages` keeps apt from fetching AppStream/Contents indexes that apt.conf.d may enable.
trixie_sources() { # $1 = keyring
  echo "deb [signed-by=$1 target=Packages] $MIRROR/debian $SUITE main"
  echo "deb [signed-by=$1 target=Packages] $MIRROR/debian $SUITE-updates main"
  echo "deb [signed-by=$1 target=Packages] $MIRROR/debian-security $SUITE-security main"
}

log "fetching Debian $SUITE package lists (private apt configuration; signatures checked with $KEYRING)"
mapfile -t sources < <(trixie_sources "$KEYRING")
apt_setup trixie "${sources[@]}"
if ! apt_update_verified trixie 3; then
  [[ -z "${SPIRE_PQC_DEBIAN_KEYRING:-}" ]] || die "the $SUITE Release files do not verify with $KEYRING"
  # The system keyring predates the trixie keys (debian-archive-keyring < 2023.3+deb12u1). Bookworm's current
  # debian-archive-keyring package has them; fetch it through a private bookworm list verified by the system
  # keyring, so the chain of trust stays the system's own. Nothing is installed system-wide.
  log "$KEYRING does not verify $SUITE; fetching bookworm's current debian-archive-keyring package"
  apt_setup bookworm \
    "deb [signed-by=$SYSTEM_KEYRING target=Packages] $MIRROR/debian bookworm main" \
    "deb [signed-by=$SYSTEM_KEYRING target=Packages] $MIRROR/debian bookworm-updates main"
  apt_update_verified bookworm 2 || die "cannot verify bookworm's package lists with $SYSTEM_KEYRING either"
  mkdir -p "$WORK/keyring-deb"
  (cd "$WORK/keyring-deb" && apt-get "${APT_OPTS[@]}" -q download debian-archive-keyring) ||
    die "apt-get download debian-archive-keyring failed"
  dpkg-deb -x "$WORK"/keyring-deb/debian-archive-keyring_*.deb "$WORK/keyring-root"
  KEYRING="$CACHE/debian-archive-keyring.gpg"
  cp "$WORK/keyring-root/usr/share/keyrings/debian-archive-keyring.gpg" "$KEYRING"
  log "using $KEYRING (from $(basename "$WORK"/keyring-deb/*.deb))"
  mapfile -t sources < <(trixie_sources "$KEYRING")
  apt_setup trixie-2 "${sources[@]}"
  apt_update_verified trixie-2 3 ||
    die "the $SUITE Release files do not verify even with bookworm's current debian-archive-keyring"
fi

# ---------------------------------------------------------------------------------------------------------
# Download (apt checks each .deb's SHA-256 against the verified Packages index) and unpack.

mkdir -p "$WORK/debs"
log "downloading ${PACKAGES[*]} from $SUITE"
(cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" -q download "${PACKAGES[@]}") || die "apt-get download failed"

STAGE="$WORK/root"
mkdir -p "$STAGE"
for deb in "$WORK"/debs/*.deb; do
  dpkg-deb -x "$deb" "$STAGE"
  log "  unpacked $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
done
{
  echo "# Debian $SUITE packages unpacked by scripts/install-openssl.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for deb in "$WORK"/debs/*.deb; do
    echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version) sha256:$(sha256sum "$deb" | cut -d' ' -f1)"
  done
} >"$STAGE/PACKAGES.txt"

LIBDIR_REL="usr/lib/$TRIPLET"
[[ -e "$STAGE/$LIBDIR_REL/$LOADER" ]] || die "trixie's libc6 has no $LIBDIR_REL/$LOADER"
[[ -x "$STAGE/usr/bin/openssl" ]] || die "the openssl package has no usr/bin/openssl"
[[ -d "$STAGE/$LIBDIR_REL/ossl-modules" ]] || die "openssl-provider-legacy has no $LIBDIR_REL/ossl-modules"
# usr/lib/ssl/openssl.cnf is an absolute symlink to the *host's* /etc/ssl/openssl.cnf (bookworm's, for 3.0);
# trixie's own file is unpacked at etc/ssl/openssl.cnf.
[[ -f "$STAGE/etc/ssl/openssl.cnf" ]] || die "the openssl package has no etc/ssl/openssl.cnf"

write_wrapper() { # $1 = tree root, $2 = output file
  cat >"$2.tmp" <<EOF
#!/bin/sh
# Written by spire-pqc scripts/install-openssl.sh. Debian $SUITE's OpenSSL, started through $SUITE's own dynamic
# loader so that its libc and libssl are used instead of the host's (packages: $1/PACKAGES.txt).
root='$1'
OPENSSL_CONF="\$root/etc/ssl/openssl.cnf"
OPENSSL_MODULES="\$root/$LIBDIR_REL/ossl-modules"
export OPENSSL_CONF OPENSSL_MODULES
exec "\$root/$LIBDIR_REL/$LOADER" --library-path "\$root/$LIBDIR_REL" "\$root/usr/bin/openssl" "\$@"
EOF
  chmod 0755 "$2.tmp"
  mv -f "$2.tmp" "$2"
}

# Every shared object openssl loads must come from the tree; a library resolved from the host (found through
# the host's ld.so.cache) would mean a package is missing from PACKAGES.
check_closure() { # $1 = tree root
  local listing outside
  listing="$("$1/$LIBDIR_REL/$LOADER" --library-path "$1/$LIBDIR_REL" --list "$1/usr/bin/openssl")" ||
    die "trixie's loader cannot load openssl:"$'\n'"$listing"
  outside="$(echo "$listing" | grep '=>' | grep -v -e "=> $1/" -e 'linux-vdso' || true)"
  [[ -z "$outside" ]] || die "libraries resolved outside $1 (add their packages to PACKAGES):"$'\n'"$outside"
}

check_closure "$STAGE"
write_wrapper "$STAGE" "$WORK/openssl35"
version="$(check_openssl "$WORK/openssl35")" ||
  die "the unpacked OpenSSL does not work or lacks ML-KEM-768/ML-DSA-65/X25519MLKEM768: $("$WORK/openssl35" version 2>&1 || true)"

# Swap the verified tree into place, then point the wrapper at it and check once more.
rm -rf "$ROOT"
mv "$STAGE" "$ROOT"
write_wrapper "$ROOT" "$WRAPPER"
version="$(check_openssl "$WRAPPER")" || die "$WRAPPER does not work after installation"
log "installed $WRAPPER ($version) from $ROOT"
