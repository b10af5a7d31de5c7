# Sourced by dist_train.sh, dist_test.sh and slurm_train.sh.
# shellcheck shell=bash

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$TOOLS_DIR")
# The repository's .venv if `make install` made one, else the python on PATH.
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO_DIR/.venv/bin/python" ]; then
    PYTHON="$REPO_DIR/.venv/bin/python"
  else
    PYTHON=python
  fi
fi

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

require_positive_int() {  # NAME VALUE
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

require_non_negative_int() {  # NAME VALUE
  [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got '$2'"
}

require_file() {  # WHAT PATH
  [ -f "$2" ] || die "$1 '$2' does not exist"
}

# torchrun SCRIPT [ARGS...]: run SCRIPT with GPUS processes on each of NNODES
# nodes (NODE_RANK, MASTER_ADDR, PORT as in dist_train.sh).
torchrun_script() {
  NNODES=${NNODES:-1}
  NODE_RANK=${NODE_RANK:-0}
  PORT=${PORT:-29500}
  MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
  require_positive_int GPUS "$GPUS"
  require_positive_int NNODES "$NNODES"
  require_non_negative_int NODE_RANK "$NODE_RANK"
  require_positive_int PORT "$PORT"
  exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$@"
}
