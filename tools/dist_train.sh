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
require_file config "$CONFIG"
torchrun_script "$TOOLS_DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
