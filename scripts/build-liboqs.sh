#!/usr/bin/env bash
# Builds liboqs's shared library (ML-KEM-768 + ML-DSA-65 only) from the vendored release tarball into a cache
# the tests, the liboqs backend and liboqs-python reuse: $SPIRE_PQC_CACHE/liboqs-$VERSION/{lib,include}.
#
# Idempotent: does nothing when that prefix already holds a library built from the same tarball (SHA-256) with
# the same options (recorded in its BUILD-INFO file). Two concurrent runs are serialised by a lock; the library is
# built in a scratch directory and moved into place only once it loads and reports the expected version.
#
# Environment:
#   SPIRE_PQC_CACHE           cache root (default ~/.cache/spire-pqc)
#   SPIRE_PQC_LIBOQS_TARBALL  the liboqs-$VERSION.tar.gz to build (default: third_party/liboqs/ in this
#                             repository); a "<tarball>.sha256" file must sit beside it and match.
#
# Options, and why (facts in third_party/liboqs/README.md):
#   OQS_MINIMAL_BUILD         only the two algorithms spire-pqc uses: a smaller library and a ~15 s build.
#   BUILD_SHARED_LIBS=ON      liboqs-python and the backend load liboqs.so with ctypes.
#   OQS_BUILD_ONLY_LIB=ON     no liboqs tests/docs targets.
#   OQS_USE_OPENSSL=OFF       self-contained: no dependency on the host's libcrypto (or its headers), and the
#                             default random source is the OS (getentropy) - the source the backend restores after
#                             a seeded ML-DSA key generation (spire_pqc/crypto/_liboqs.py).
#   OQS_DIST_BUILD=ON         (liboqs's default) AVX2 code chosen at run time, so the cache works on any x86-64.
set -euo pipefail

VERSION=0.16.0
REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SPIRE_PQC_CACHE:-$HOME/.cache/spire-pqc}"
TARBALL="${SPIRE_PQC_LIBOQS_TARBALL:-$REPO/third_party/liboqs/liboqs-$VERSION.tar.gz}"
PREFIX="$CACHE/liboqs-$VERSION"
OPTIONS=(
  -DOQS_MINIMAL_BUILD="KEM_ml_kem_768;SIG_ml_dsa_65"
  -DBUILD_SHARED_LIBS=ON
  -DOQS_BUILD_ONLY_LIB=ON
  -DOQS_USE_OPENSSL=OFF
  -DOQS_DIST_BUILD=ON
  -DCMAKE_BUILD_TYPE=Release
)

log() { echo "build-liboqs: $*"; }
die() {
  echo "build-liboqs: error: $*" >&2
  exit 1
}

[[ -f "$TARBALL" ]] || die "liboqs source $TARBALL not found (set SPIRE_PQC_LIBOQS_TARBALL to liboqs-$VERSION.tar.gz)"
[[ -f "$TARBALL.sha256" ]] || die "$TARBALL.sha256 not found: refusing to build an unverified tarball"
EXPECTED="$(awk '{print $1; exit}' "$TARBALL.sha256")"
[[ "$EXPECTED" =~ ^[0-9a-f]{64}$ ]] || die "$TARBALL.sha256 does not start with a SHA-256 digest"
ACTUAL="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
[[ "$ACTUAL" == "$EXPECTED" ]] || die "SHA-256 mismatch for $TARBALL: expected $EXPECTED, got $ACTUAL"

# What a finished build records; a different tarball or option list means rebuild.
STAMP="liboqs $VERSION sha256:$ACTUAL options:${OPTIONS[*]}"
built() { [[ -f "$PREFIX/lib/liboqs.so" && -f "$PREFIX/BUILD-INFO" && "$(head -n1 "$PREFIX/BUILD-INFO")" == "$STAMP" ]]; }

if built; then
  log "liboqs $VERSION already built in $PREFIX"
  exit 0
fi

for tool in cmake ninja cc flock; do
  command -v "$tool" >/dev/null || die "'$tool' not found (Debian: apt-get install cmake ninja-build gcc util-linux)"
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.build-liboqs.lock"
flock 9
if built; then
  log "built meanwhile by another run: $PREFIX"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.liboqs.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log "building liboqs $VERSION (ML-KEM-768, ML-DSA-65; shared) from $TARBALL into $PREFIX"
tar -xzf "$TARBALL" -C "$WORK" || die "cannot unpack $TARBALL"
SRC="$WORK/liboqs-$VERSION"
[[ -f "$SRC/CMakeLists.txt" ]] || die "$TARBALL does not unpack to liboqs-$VERSION/"
STAGE="$WORK/prefix"
cmake -S "$SRC" -B "$WORK/build" -G Ninja "${OPTIONS[@]}" -DCMAKE_INSTALL_PREFIX="$STAGE" \
  -DCMAKE_INSTALL_LIBDIR=lib >"$WORK/configure.log" 2>&1 ||
  {
    tail -n 40 "$WORK/configure.log" >&2
    die "cmake configure failed"
  }
cmake --build "$WORK/build" --parallel "$(nproc)" >"$WORK/build.log" 2>&1 ||
  {
    tail -n 40 "$WORK/build.log" >&2
    die "cmake build failed"
  }
cmake --install "$WORK/build" >"$WORK/install.log" 2>&1 ||
  {
    tail -n 20 "$WORK/install.log" >&2
    die "cmake install failed"
  }

# The library must load and report the version we built before it replaces anything.
reported="$(
  python3 - "$STAGE/lib/liboqs.so" <<'EOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.OQS_version.restype = ctypes.c_char_p
print(lib.OQS_version().decode())
EOF
)" || die "the built $STAGE/lib/liboqs.so does not load"
[[ "$reported" == "$VERSION" ]] || die "the built library reports version $reported, expected $VERSION"
{
  echo "$STAMP"
  echo "# built by spire-pqc scripts/build-liboqs.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) with $(cmake --version | head -n1)"
} >"$STAGE/BUILD-INFO"

rm -rf "$PREFIX"
mv "$STAGE" "$PREFIX"
log "installed $PREFIX/lib/liboqs.so (liboqs $reported)"
