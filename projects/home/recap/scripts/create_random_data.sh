#!/usr/bin/env bash
# Random Heavy Ranker data for a recap config, written to the folder of its train_data.inputs glob.
#
#   create_random_data.sh [CONFIG.yaml] [generator flags: --n_examples N --num_files M --base_rate R ...]
#
# Without CONFIG: config/local.yaml and its data, 10 files of 8192 rows (the first 9 train, the
# last is held out). Later flags override earlier ones, so e.g. `--n_examples 4096` still works.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../../../.." && pwd)"
PYTHON="$REPO_ROOT/.venv/bin/python"
if [[ ! -x "$PYTHON" ]]; then
    echo "error: $PYTHON not found; run ./setup.sh in $REPO_ROOT first" >&2
    exit 1
fi
export TML_BASE="${TML_BASE:-$REPO_ROOT}"

DEFAULTS=()
if [[ $# -gt 0 && "$1" != --* ]]; then
    CONFIG="$1"
    shift
else
    CONFIG="$REPO_ROOT/projects/home/recap/config/local.yaml"
    DEFAULTS=(--n_examples 81920 --num_files 10)
fi

cd "$REPO_ROOT"
exec "$PYTHON" -m tml.projects.home.recap.data.generate_random_data --config_path "$CONFIG" "${DEFAULTS[@]}" "$@"
