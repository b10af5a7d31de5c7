#!/usr/bin/env bash
# Train with N processes per node through torchrun (torch.distributed.run).
#
#   tools/dist_train.sh CONFIG GPUS [tools/train.py options]
#
# One node:  tools/dist_train.sh configs/retinanet_r50_psbn.py 8
# Two nodes: NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh CONFIG 8
#            NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh CONFIG 8
# Without CUDA, GPUS is the number of CPU processes (gloo backend).
set -euo pipefail
source "$(dirname "$0")/_launch_common.sh"

[ $# -ge 2 ] || die "usage: $0 CONFIG GPUS [train.py options]"
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
require_file config "$CONFIG"
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
  "$TOOLS_DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
