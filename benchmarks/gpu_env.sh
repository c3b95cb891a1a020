# Sourced by the benchmarks/gpu*.sh scripts: sets $card (the GPU's name, for file names) and PYTHONPATH. timm is
# installed from a wheel in .whl/ when there is one, for a machine without internet (python3 -m pip download --no-deps
# --only-binary=:all: -d .whl timm==1.0.31).
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
