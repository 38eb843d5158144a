#!/usr/bin/env bash
# Installs attnsketch like a C library (`make install PREFIX=...` calls this):
#
#   <prefix>/<libdir>/libattnsketch.so.X.Y.Z          the shared library (SONAME from build.rs)
#   <prefix>/<libdir>/libattnsketch.so.<abi>          -> libattnsketch.so.X.Y.Z   (what programs load)
#   <prefix>/<libdir>/libattnsketch.so                -> libattnsketch.so.<abi>   (what -lattnsketch finds)
#   <prefix>/<libdir>/libattnsketch.a                 the static library
#   <prefix>/include/attnsketch.h, attnsketch.hpp
#   <prefix>/<libdir>/pkgconfig/attnsketch.pc
#   <prefix>/<libdir>/cmake/attnsketch/attnsketchConfig.cmake, attnsketchConfigVersion.cmake
#
# <abi> is MAJOR from 1.0 on and 0.MINOR before (docs/packaging.md). The
# pkg-config and CMake files locate everything relative to themselves, so the
# installed tree may be moved as a whole.
#
# Usage: scripts/install.sh [--prefix P] [--libdir DIR] [--destdir D] [--no-build] [--strip] [--uninstall]
#   --prefix P    install prefix (default /usr/local; also $PREFIX)
#   --libdir DIR  library directory relative to the prefix (default lib; e.g. lib/x86_64-linux-gnu)
#   --destdir D   stage under D (packagers; also $DESTDIR): files go to D/P/...
#   --no-build    install target/release as it is (no cargo build)
#   --strip       strip debug info from the installed libraries
#   --uninstall   remove the files this version installs (and cmake/attnsketch, pkgconfig if empty)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

prefix=${PREFIX:-/usr/local}
libdir=lib
destdir=${DESTDIR:-}
build=1
strip=0
uninstall=0
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --libdir) libdir=$2; shift 2 ;;
        --libdir=*) libdir=${1#*=}; shift ;;
        --destdir) destdir=$2; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --strip) strip=1; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $prefix in /*) ;; *) prefix=$(realpath -m "$prefix") ;; esac
case $libdir in /*|*..*) echo "install.sh: --libdir must be relative to the prefix, without '..'" >&2; exit 2 ;; esac
prefix=${prefix%/}
libdir=${libdir%/}

VERSION=$(sed -n 's/^#define ATTNSKETCH_VERSION_STRING "\(.*\)"$/\1/p' include/attnsketch.h)
CARGO_VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$VERSION" ] && [ "$VERSION" = "$CARGO_VERSION" ] || {
    echo "install.sh: include/attnsketch.h says '$VERSION', Cargo.toml '$CARGO_VERSION': run scripts/regen-header.sh" >&2
    exit 1
}

D=$destdir$prefix
LIB=$D/$libdir
INC=$D/include
PC=$LIB/pkgconfig
CM=$LIB/cmake/attnsketch

if [ $uninstall = 1 ]; then
    abi_glob="libattnsketch.so.*"
    rm -fv "$LIB"/libattnsketch.so "$LIB"/$abi_glob "$LIB/libattnsketch.a" \
        "$INC/attnsketch.h" "$INC/attnsketch.hpp" "$PC/attnsketch.pc" \
        "$CM/attnsketchConfig.cmake" "$CM/attnsketchConfigVersion.cmake"
    # Only the directories that are ours alone, and only when empty.
    for d in "$CM" "$LIB/cmake" "$PC"; do rmdir "$d" 2>/dev/null || true; done
    exit 0
fi

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$TARGET/release
NATIVE_CACHE=$REL/attnsketch-native-static-libs.txt
if [ $build = 1 ]; then
    # The system libraries the static library needs (`Libs.private`),
    # as rustc reports them; cached per rustc version and lock file.
    key="$(rustc -vV | tr '\n' ' ') $(sha256sum Cargo.lock | cut -c1-16)"
    if [ ! -f "$NATIVE_CACHE" ] || [ "$(head -1 "$NATIVE_CACHE")" != "$key" ]; then
        echo "== cargo rustc --crate-type staticlib -- --print native-static-libs"
        libs=$(cargo rustc -q --release --lib --crate-type staticlib -- --print native-static-libs 2>&1 |
            sed -n 's/.*native-static-libs: //p' | tail -1)
        [ -n "$libs" ] || { echo "install.sh: rustc printed no native-static-libs" >&2; exit 1; }
        mkdir -p "$REL"
        printf '%s\n%s\n' "$key" "$libs" >"$NATIVE_CACHE"
    fi
    echo "== cargo build --release --lib"
    cargo build -q --release --lib
fi
[ -f "$NATIVE_CACHE" ] || { echo "install.sh: $NATIVE_CACHE missing: run without --no-build once" >&2; exit 1; }
NATIVE_LIBS=$(sed -n 2p "$NATIVE_CACHE")
SO=$REL/libattnsketch.so
A=$REL/libattnsketch.a
for f in "$SO" "$A"; do [ -f "$f" ] || { echo "install.sh: $f missing" >&2; exit 1; }; done

SONAME=$(readelf -d "$SO" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
case $SONAME in libattnsketch.so.?*) ;; *) echo "install.sh: $SO has SONAME '$SONAME'" >&2; exit 1 ;; esac
ABI=${SONAME#libattnsketch.so.}
case $VERSION in "$ABI".*) ;; *) echo "install.sh: SONAME $SONAME does not match version $VERSION (stale build?)" >&2; exit 1 ;; esac

echo "== installing attnsketch $VERSION (SONAME $SONAME) into ${destdir:+$destdir:}$prefix"
install -d "$LIB" "$INC" "$PC" "$CM"
install -m 0755 "$SO" "$LIB/libattnsketch.so.$VERSION"
install -m 0644 "$A" "$LIB/libattnsketch.a"
if [ $strip = 1 ]; then
    strip --strip-debug "$LIB/libattnsketch.so.$VERSION" "$LIB/libattnsketch.a"
fi
ln -sfn "libattnsketch.so.$VERSION" "$LIB/$SONAME"
ln -sfn "$SONAME" "$LIB/libattnsketch.so"
install -m 0644 include/attnsketch.h include/attnsketch.hpp "$INC/"

# Relative paths for the relocatable package files.
rel() { realpath -m --relative-to="$1" "$2"; }
pc_to_prefix=$(rel "$prefix/$libdir/pkgconfig" "$prefix")
libdir_to_prefix=$(rel "$prefix/$libdir" "$prefix")
cmake_libs=$(tr ' ' '\n' <<<"$NATIVE_LIBS" | sed -n 's/^-l//p' | paste -sd ';' -)
case $(readelf -h "$SO" | sed -n 's/^ *Class: *//p') in ELF64) ptr_bytes=8 ;; *) ptr_bytes=4 ;; esac
abi_example=$([ "${ABI%%.*}" = 0 ] && echo "$ABI" || echo "${ABI%%.*}")
subst() {
    sed -e "s|@VERSION@|$VERSION|g" -e "s|@SONAME@|$SONAME|g" -e "s|@ABI@|$ABI|g" \
        -e "s|@ABI_EXAMPLE@|$abi_example|g" -e "s|@LIBDIR@|$libdir|g" \
        -e "s|@PC_TO_PREFIX@|$pc_to_prefix|g" -e "s|@LIBDIR_TO_PREFIX@|$libdir_to_prefix|g" \
        -e "s|@NATIVE_LIBS@|$NATIVE_LIBS|g" -e "s|@CMAKE_NATIVE_LIBS@|$cmake_libs|g" \
        -e "s|@SIZEOF_VOID_P@|$ptr_bytes|g" "$1"
}
subst packaging/attnsketch.pc.in >"$PC/attnsketch.pc"
subst packaging/attnsketchConfig.cmake.in >"$CM/attnsketchConfig.cmake"
subst packaging/attnsketchConfigVersion.cmake.in >"$CM/attnsketchConfigVersion.cmake"
chmod 0644 "$PC/attnsketch.pc" "$CM"/*.cmake
if grep -n '@[A-Z_]*@' "$PC/attnsketch.pc" "$CM"/*.cmake; then
    echo "install.sh: unsubstituted template variables" >&2; exit 1
fi

(cd "$D" && find . \( -path "./$libdir/libattnsketch*" -o -path ./include/attnsketch.h -o -path ./include/attnsketch.hpp \
    -o -path "./$libdir/pkgconfig/attnsketch.pc" -o -path "./$libdir/cmake/attnsketch/*" \) | sort | sed 's|^\./|   |')
