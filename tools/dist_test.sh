#!/usr/bin/env bash
# Evaluate a checkpoint with N processes per node through torchrun.
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options]
#
# NNODES, NODE_RANK, MASTER_ADDR and PORT as for dist_train.sh.
set -euo pipefail
source "$(dirname "$0")/_launch_common.sh"

[ $# -ge 3 ] || die "usage: $0 CONFIG CHECKPOINT GPUS [test.py options]"
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
require_file config "$CONFIG"
require_file checkpoint "$CHECKPOINT"
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
  "$TOOLS_DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
