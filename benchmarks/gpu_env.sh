# Sourced by the benchmarks/gpu*.sh scripts: the GPU machine's environment. A bare machine there has torch; timm
# of the version we test is carried as a wheel in .whl/ when present. Sets $card (the GPU's name, for file names).
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
