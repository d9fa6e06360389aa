#!/usr/bin/env bash
# The Heavy Ranker's local job: make random data if there is none, train, evaluate every validation
# set, and print where the checkpoints and TensorBoard logs are.
#
#   run_local.sh [--new] [--debug_loop] [--set key=value ...]   (arguments but --new go to the entry point)
#
# Config: config/local.yaml (or $CONFIG). Data: the folder of its train_data.inputs glob
# (~/tmp/tml/recap_local/data for local.yaml; ~/tmp/tml is $TML_OUTPUT's default). Runs go to
# ~/tmp/tml/recap_local/runs/<date-time>: the latest run that has not reached
# training.num_train_steps is resumed (the script says which), otherwise, or with --new, a new
# folder is made. --save_dir DIR picks the folder yourself (and resumes a run in DIR).
# NPROC=N runs N processes under torchrun; OMP_NUM_THREADS defaults to 1.
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

RUNS_DIR="${TML_OUTPUT:-$HOME/tmp/tml}/recap_local/runs"
NEW_RUN=0
ARGS=()
OVERRIDES=()  # the --set values, for the run's num_train_steps
previous=""
for arg in "$@"; do
    case "$arg" in
        --new) NEW_RUN=1 ;;
        --save_dir|--save_dir=*) NEW_RUN=2; ARGS+=("$arg") ;;
        --set=*) OVERRIDES+=("${arg#--set=}"); ARGS+=("$arg") ;;
        *) ARGS+=("$arg"); [[ "$previous" == "--set" ]] && OVERRIDES+=("$arg") ;;
    esac
    previous="$arg"
done

SAVE_DIR_ARGS=()
if [[ "$NEW_RUN" -ne 2 ]]; then
    RUN_DIR=""
    if [[ "$NEW_RUN" -eq 0 ]]; then
        # The newest run folder whose newest checkpoint is short of training.num_train_steps (the
        # config's, or the last --set of it: raising it resumes the latest run).
        RUN_DIR="$("$PYTHON" -c '
import os, sys, yaml
config_path, runs_dir, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(config_path) as stream:
    steps = int(((yaml.safe_load(stream) or {}).get("training") or {}).get("num_train_steps", 1_000_000))
for override in overrides:
    key, _, value = override.partition("=")
    if key.strip() == "training.num_train_steps" and value.strip().isdigit():
        steps = int(value)
runs = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
for name in reversed(runs):
    run = os.path.join(runs_dir, name)
    checkpoints = [int(entry) for entry in os.listdir(run) if entry.isdigit()]
    if max(checkpoints, default=0) < steps:
        print(run)
        break
' "$CONFIG" "$RUNS_DIR" "${OVERRIDES[@]}")"
    fi
    if [[ -n "$RUN_DIR" ]]; then
        echo "Resuming the unfinished run in $RUN_DIR (run_local.sh --new starts another)."
    else
        RUN_DIR="$RUNS_DIR/$(date +%Y%m%d-%H%M%S)"
        echo "Starting a new run in $RUN_DIR."
    fi
    SAVE_DIR_ARGS=(--save_dir "$RUN_DIR")
fi
ENTRY_POINT=(-m tml.projects.home.recap.main --config_path "$CONFIG" "${SAVE_DIR_ARGS[@]}")
if [[ "$NPROC" -gt 1 ]]; then
    "$PYTHON" -m tml.common.launch --standalone --nproc_per_node "$NPROC" "${ENTRY_POINT[@]}" "${ARGS[@]}"
else
    "$PYTHON" "${ENTRY_POINT[@]}" "${ARGS[@]}"
fi
