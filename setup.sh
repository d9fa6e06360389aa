#!/usr/bin/env bash
# Creates .venv with the pinned tml stack and installs tml in editable mode.
#   ./setup.sh            CPU stack, or the CUDA stack when `nvidia-smi` sees a GPU
#   ./setup.sh --cpu      force the CPU stack
#   ./setup.sh --gpu      force the CUDA stack
# Re-running with unchanged requirement files skips the installs and only re-checks.
set -euo pipefail

cd "$(dirname "$0")"
REPO_ROOT=$(pwd)
VENV="$REPO_ROOT/.venv"

die() { echo "setup.sh: error: $*" >&2; exit 1; }

variant=""
for arg in "$@"; do
    case "$arg" in
        --cpu) variant=cpu ;;
        --gpu) variant=gpu ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) die "unknown option '$arg' (use --cpu or --gpu)" ;;
    esac
done
if [ -z "$variant" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then variant=gpu; else variant=cpu; fi
fi

python_version_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; }

find_python() {
    if [ -n "${PYTHON:-}" ]; then  # an explicit choice is used or refused, never replaced
        python_version_ok "$PYTHON" && { command -v "$PYTHON"; return 0; }
        return 1
    fi
    # 3.11 first: the CPU torch wheel pinned in images/ is built for it on our machines.
    local candidate
    for candidate in python3.11 python3.12 python3.10 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_version_ok "$candidate"; then
            command -v "$candidate"; return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PYTHON_BIN=$(find_python) || die "tml needs Python >= 3.10 but found $("${PYTHON:-python3}" --version 2>&1 || echo 'no python3'). Install python3.11 (e.g. 'apt-get install python3.11-venv') or point PYTHON=/path/to/python3.11 at one, then re-run ./setup.sh."
    echo "setup.sh: creating .venv with $PYTHON_BIN ($("$PYTHON_BIN" --version 2>&1))"
    "$PYTHON_BIN" -m venv "$VENV" || die "could not create .venv with $PYTHON_BIN; install its venv module (e.g. 'apt-get install python3-venv') and re-run."
fi
PY="$VENV/bin/python"
python_version_ok "$PY" || die ".venv uses $("$PY" --version 2>&1); tml needs >= 3.10. Remove .venv and re-run ./setup.sh with PYTHON=/path/to/python3.11."

REQUIREMENTS=(images/requirements-common.txt "images/requirements-$variant.txt" images/requirements-nodeps.txt)
STAMP="$VENV/.tml-install-stamp"
wanted_stamp=$(printf '%s\n' "$variant" "$("$PY" --version 2>&1)" | cat - "${REQUIREMENTS[@]}" pyproject.toml setup.py | sha256sum | cut -d' ' -f1)

PIP_LOG="$VENV/pip-install.log"
pip_install() {
    if ! "$PY" -m pip install --disable-pip-version-check "$@" >"$PIP_LOG" 2>&1; then
        if grep -qiE 'connection|network|timed out|resolve host|Max retries|No matching distribution' "$PIP_LOG"; then
            die "pip could not get packages from the package index ($*); check the network, or set PIP_INDEX_URL to a reachable mirror, then re-run ./setup.sh (pip's output: $PIP_LOG)."
        fi
        die "pip install $* failed; see $PIP_LOG."
    fi
}

if [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted_stamp" ]; then
    echo "setup.sh: .venv is up to date ($variant stack), skipping installs"
else
    echo "setup.sh: installing the pinned $variant stack into .venv (about a minute the first time)"
    rm -f "$STAMP"
    pip_install -r "images/requirements-$variant.txt"
    pip_install --no-deps -r images/requirements-nodeps.txt
    pip_install --no-deps --no-build-isolation -e .
    echo "$wanted_stamp" >"$STAMP"
fi

(cd / && "$PY" -m tml.tools.env_check) || die "the smoke check failed (output above); remove .venv and re-run ./setup.sh, or report the output."
echo "setup.sh: done. Activate with 'source .venv/bin/activate' or call .venv/bin/python directly."
