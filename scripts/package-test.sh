#!/usr/bin/env bash
# Tests the installed package as an outside project sees it:
#   1. scripts/install.sh into a fresh mktemp prefix; checks the layout, the
#      symlink chain and the SONAME (readelf);
#   2. tests/package/consumer.c built with `pkg-config --cflags --libs
#      attnsketch` (shared: records NEEDED <soname>, loads it from the prefix)
#      and statically (libattnsketch.a + pkg-config --static's Libs.private);
#   3. the installed tree is moved elsewhere (the .pc and CMake files are
#      relocatable) and both consumers are built again from there;
#   4. tests/package/cmake (C++17, attnsketch.hpp) with CMake
#      find_package(attnsketch <version>): targets attnsketch::attnsketch and
#      attnsketch::attnsketch_static; a request for the next minor (0.x) or
#      major must be refused, "0" / the installed version accepted.
# Installs cmake and pkg-config with apt-get when missing. Exits non-zero on
# any failure. KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/attnsketch-pkg.XXXXXX")
[ "${KEEP:-0}" = 1 ] && echo "keeping $TMP" || trap 'rm -rf "$TMP"' EXIT
fail=0
results=()
note() { results+=("$1"); echo "   $1"; }

# --- 1. install -------------------------------------------------------------
P=$TMP/a/usr
bash scripts/install.sh --prefix "$P"
VERSION=$(sed -n 's/^#define ATTNSKETCH_VERSION_STRING "\(.*\)"$/\1/p' include/attnsketch.h)
SONAME=$(readelf -d "$P/lib/libattnsketch.so.$VERSION" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
ABI=${SONAME#libattnsketch.so.}
major=${VERSION%%.*}; rest=${VERSION#*.}; minor=${rest%%.*}
want_abi=$([ "$major" = 0 ] && echo "0.$minor" || echo "$major")
[ "$ABI" = "$want_abi" ] && note "ok   SONAME $SONAME (version $VERSION)" ||
    { note "FAIL SONAME '$SONAME', want libattnsketch.so.$want_abi"; fail=1; }
[ "$(readlink "$P/lib/libattnsketch.so")" = "$SONAME" ] &&
    [ "$(readlink "$P/lib/$SONAME")" = "libattnsketch.so.$VERSION" ] &&
    note "ok   libattnsketch.so -> $SONAME -> libattnsketch.so.$VERSION" ||
    { note "FAIL symlink chain"; ls -l "$P/lib"; fail=1; }
for f in lib/libattnsketch.a include/attnsketch.h include/attnsketch.hpp lib/pkgconfig/attnsketch.pc \
    lib/cmake/attnsketch/attnsketchConfig.cmake lib/cmake/attnsketch/attnsketchConfigVersion.cmake; do
    [ -f "$P/$f" ] || { note "FAIL missing $f"; fail=1; }
done
exported=$(nm -D --defined-only "$P/lib/libattnsketch.so.$VERSION" | awk '{print $3}' | sort)
header=$(grep -o '\bas_[a-z0-9_]*(' include/attnsketch.h | tr -d '(' | sort -u)
if [ "$(comm -13 <(echo "$exported") <(echo "$header"))" = "" ]; then
    note "ok   every function of attnsketch.h is exported ($(wc -l <<<"$header") functions)"
else
    note "FAIL not exported: $(comm -13 <(echo "$exported") <(echo "$header") | tr '\n' ' ')"; fail=1
fi
if grep -v '^as_' <<<"$exported" | grep -q .; then
    note "FAIL exports outside as_*: $(grep -v '^as_' <<<"$exported" | head -5 | tr '\n' ' ')"; fail=1
else
    note "ok   the shared library exports only as_* symbols"
fi

# True when `binary` loads the SONAME from directory `dir` (ldd, paths resolved).
loads_from() {
    local path
    path=$(ldd "$1" | sed -n "s|^[[:space:]]*$SONAME => \(.*\) (0x.*|\1|p")
    [ -n "$path" ] && [ "$(realpath "$(dirname "$path")")" = "$(realpath "$2")" ]
}

# --- 2/3. C through pkg-config, before and after moving the tree ----------
CFLAGS_W=(-std=c11 -Wall -Wextra -Werror -pedantic -O1)
c_consumer() { # prefix label
    local prefix=$1 label=$2 out=$TMP/c-$2
    export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
    local v; v=$(pkg-config --modversion attnsketch)
    [ "$v" = "$VERSION" ] || { note "FAIL pkg-config --modversion ($label): $v"; fail=1; }
    local libdir; libdir=$(pkg-config --variable=libdir attnsketch)
    [ "$(realpath "$libdir")" = "$(realpath "$prefix/lib")" ] ||
        { note "FAIL pkg-config libdir ($label): $libdir"; fail=1; }
    # shared
    # shellcheck disable=SC2046
    if cc "${CFLAGS_W[@]}" "$ROOT/tests/package/consumer.c" $(pkg-config --cflags --libs attnsketch) -lm \
        -Wl,-rpath,"$libdir" -o "$out-shared"; then
        if "$out-shared" && readelf -d "$out-shared" | grep -q "NEEDED.*\[$SONAME\]" &&
            loads_from "$out-shared" "$prefix/lib"; then
            note "ok   C via pkg-config --cflags --libs ($label): NEEDED $SONAME from the prefix"
        else
            note "FAIL C via pkg-config ($label): run/NEEDED/ldd"; ldd "$out-shared" || true; fail=1
        fi
    else note "FAIL C via pkg-config ($label): build"; fail=1; fi
    # static: the archive itself plus Libs.private
    local priv; priv=$(pkg-config --static --libs-only-l attnsketch | tr ' ' '\n' | grep -vx -- '-lattnsketch' | tr '\n' ' ')
    # shellcheck disable=SC2046,SC2086
    if cc "${CFLAGS_W[@]}" "$ROOT/tests/package/consumer.c" $(pkg-config --cflags attnsketch) \
        -L"$libdir" -Wl,-Bstatic -lattnsketch -Wl,-Bdynamic $priv -o "$out-static"; then
        if "$out-static" && ! readelf -d "$out-static" | grep -q 'NEEDED.*libattnsketch'; then
            note "ok   C static via pkg-config --static ($label): no libattnsketch NEEDED"
        else note "FAIL C static ($label): run or NEEDED"; fail=1; fi
    else note "FAIL C static via pkg-config ($label): build"; fail=1; fi
    unset PKG_CONFIG_PATH
}
c_consumer "$P" installed
P2=$TMP/moved/opt/attnsketch
mkdir -p "$(dirname "$P2")"
mv "$P" "$P2"
c_consumer "$P2" moved

# --- 4. C++ through CMake find_package -------------------------------------
cmake_configure() { # build-dir request -> status
    cmake -S "$ROOT/tests/package/cmake" -B "$1" -DCMAKE_PREFIX_PATH="$P2" -DATTNSKETCH_REQUEST="$2" \
        -DCMAKE_BUILD_TYPE=Release >"$1.log" 2>&1
}
B=$TMP/cmake-build
if cmake_configure "$B" "$ABI" && cmake --build "$B" -j 2 >"$B.build.log" 2>&1; then
    if "$B/consumer_shared" && readelf -d "$B/consumer_shared" | grep -q "NEEDED.*\[$SONAME\]" &&
        loads_from "$B/consumer_shared" "$P2/lib"; then
        note "ok   C++ via CMake find_package(attnsketch $ABI), attnsketch::attnsketch"
    else note "FAIL C++ CMake shared: run/NEEDED/ldd"; fail=1; fi
    if "$B/consumer_static" && ! readelf -d "$B/consumer_static" | grep -q 'NEEDED.*libattnsketch'; then
        note "ok   C++ via CMake, attnsketch::attnsketch_static"
    else note "FAIL C++ CMake static: run or NEEDED"; fail=1; fi
else
    note "FAIL C++ via CMake: configure/build"; cat "$B.log" "$B.build.log" 2>/dev/null | tail -40; fail=1
fi
# Version requests: "0"-style major only and the exact version are accepted,
# the next ABI key refused.
if [ "$major" = 0 ]; then refuse="0.$((minor + 1))"; accept=(0 "$VERSION"); else
    refuse="$((major + 1))"; accept=("$major" "$VERSION"); fi
for r in "${accept[@]}"; do
    if cmake_configure "$TMP/cmake-accept-$r" "$r"; then note "ok   find_package(attnsketch $r) accepted"
    else note "FAIL find_package(attnsketch $r) refused"; tail -20 "$TMP/cmake-accept-$r.log"; fail=1; fi
done
if cmake_configure "$TMP/cmake-refuse" "$refuse"; then
    note "FAIL find_package(attnsketch $refuse) accepted $VERSION"; fail=1
elif grep -q "attnsketch" "$TMP/cmake-refuse.log" && grep -qi "version" "$TMP/cmake-refuse.log"; then
    note "ok   find_package(attnsketch $refuse) refused ($VERSION installed)"
else note "FAIL find_package(attnsketch $refuse): failed for another reason"; tail -20 "$TMP/cmake-refuse.log"; fail=1; fi

# --- uninstall leaves nothing of ours ---------------------------------------
bash scripts/install.sh --prefix "$P2" --uninstall >/dev/null
left=$(find "$P2" -mindepth 1 -name '*attnsketch*' 2>/dev/null | head -5 || true)
[ -z "$left" ] && note "ok   --uninstall removes every installed file" || { note "FAIL left after uninstall: $left"; fail=1; }

echo "== summary"
printf '%s\n' "${results[@]}"
echo "package-test: $(printf '%s\n' "${results[@]}" | grep -c '^ok') passed, $(printf '%s\n' "${results[@]}" | grep -c '^FAIL' || true) failed"
exit $fail
