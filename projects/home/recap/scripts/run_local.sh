#!/usr/bin/env bash
# The Heavy Ranker's local job: make random data if there is none, train, evaluate every validation
# set, and print where the checkpoints and TensorBoard logs are.
#
#   run_local.sh [--debug_loop] [--set key=value ...]      (arguments go to the entry point)
#
# Config: config/local.yaml (or $CONFIG). Data: the folder of its train_data.inputs glob
# ($HOME/tmp/tml/recap_local/data for local.yaml). Each run writes to a new folder
# $HOME/tmp/tml/recap_local/runs/<date-time> (override: --set training.save_dir=DIR, which also
# resumes a run in DIR). NPROC=N runs N processes under torchrun; OMP_NUM_THREADS defaults to 1.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../../../.." && pwd)"
PYTHON="$REPO_ROOT/.venv/bin/python"
if [[ ! -x "$PYTHON" ]]; then
    echo "error: $PYTHON not found; run ./setup.sh in $REPO_ROOT first" >&2
    exit 1
fi
export TML_BASE="${TML_BASE:-$REPO_ROOT}"
DEFAULT_CONFIG="$REPO_ROOT/projects/home/recap/config/local.yaml"
CONFIG="${CONFIG:-$DEFAULT_CONFIG}"
NPROC="${NPROC:-1}"
# One math thread per process: the model is small, and a second OpenMP thread competing with the
# data thread (or other programs) for 2 cores made steps up to 20x slower in measurements.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

DATA_GLOB="$("$PYTHON" -c '
import sys
from tml.projects.home.recap.data.config_files import load_data_sections
print(load_data_sections(sys.argv[1]).train_data.inputs)
' "$CONFIG")"
if ! compgen -G "$DATA_GLOB" > /dev/null; then
    echo "No data matches $DATA_GLOB: creating random data."
    if [[ "$CONFIG" == "$DEFAULT_CONFIG" ]]; then
        bash "$SCRIPT_DIR/create_random_data.sh"  # local.yaml's size: 9 training files + 1 held out
    else
        bash "$SCRIPT_DIR/create_random_data.sh" "$CONFIG"
    fi
fi

RUN_DIR="$HOME/tmp/tml/recap_local/runs/$(date +%Y%m%d-%H%M%S)"
ENTRY_POINT=(-m tml.projects.home.recap.main --config_path "$CONFIG" --set "training.save_dir=$RUN_DIR")
if [[ "$NPROC" -gt 1 ]]; then
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "${ENTRY_POINT[@]}" "$@"
else
    "$PYTHON" "${ENTRY_POINT[@]}" "$@"
fi
