#!/usr/bin/env bash
# Train any model with timm's own train.py: ./train.sh DATASET MODEL [train.py arguments ...]
# The logic lives in timm_mod/tools/train.py; ./train.sh --help explains every preset, flag and variable.
# Interpreter: $PYTHON if set, else this checkout's .venv, else python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$here/.venv/bin/python" ]]; then
    py="$here/.venv/bin/python"
else
    py=python3
fi
TIMM_MOD_PROG="$0" exec "$py" -m timm_mod.tools.train "$@"
