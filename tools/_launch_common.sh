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
