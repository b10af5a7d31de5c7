#!/usr/bin/env bash
# Train on a slurm cluster, one task per GPU.
#
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#     tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
#
# e.g. GPUS=16 tools/slurm_train.sh gpu psbn800 configs/retinanet_r50_psbn.py work_dirs/psbn800
set -euo pipefail
source "$(dirname "$0")/_launch_common.sh"

[ $# -ge 4 ] || die "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
require_file config "$CONFIG"
require_positive_int GPUS "$GPUS"
require_positive_int GPUS_PER_NODE "$GPUS_PER_NODE"
require_positive_int CPUS_PER_TASK "$CPUS_PER_TASK"
if [ "$GPUS" -lt "$GPUS_PER_NODE" ]; then GPUS_PER_NODE=$GPUS; fi

# shellcheck disable=SC2086  # SRUN_ARGS is a list of words on purpose
exec srun -p "$PARTITION" \
  --job-name="$JOB_NAME" \
  --gres=gpu:"$GPUS_PER_NODE" \
  --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="$CPUS_PER_TASK" \
  --kill-on-bad-exit=1 \
  ${SRUN_ARGS} \
  "$PYTHON" -u "$TOOLS_DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
  --launcher=slurm "${@:5}"
