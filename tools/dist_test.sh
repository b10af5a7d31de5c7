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
require_file config "$CONFIG"
require_file checkpoint "$CHECKPOINT"
torchrun_script "$TOOLS_DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
