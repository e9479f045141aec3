#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one table of tokens/s, MFU and peak memory, at most 8 minutes
# on one GPU, non-zero exit on any failure.
#
#   benchmarks/gpu_check.sh --fetch-wheels   # here, with PyPI: wheels the GPU image lacks -> .whl/
#   benchmarks/gpu_check.sh                  # on the GPU machine (no registry): install, then check
#   benchmarks/gpu_check.sh --dry-run        # any machine without a GPU: same code paths, tiny, CPU
#
# On the GPU the project is installed with --no-deps over the image's own torch/transformers/accelerate,
# plus the carried wheels in .whl/ (benchmarks/gpu_wheels.txt), into a private target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline DS_ACCELERATOR=cpu
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p .whl
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl -r benchmarks/gpu_wheels.txt
  exit 0
fi

if [[ " $* " == *" --dry-run "* ]]; then
  # The project's own environment (make install / the venv): put this checkout's src first.
  [[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  exec "$PY" benchmarks/gpu_check.py "$@"
fi

SITE=${PRETRAIN_GPU_SITE:-/tmp/pretrain-gpu-site}
mkdir -p "$SITE"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" .; then
  echo "note: could not build the project wheel here; using $PWD/src on PYTHONPATH" >&2
  export PYTHONPATH="$PWD/src:$PYTHONPATH"
fi
"$PY" - <<'PY'
import torch, transformers, accelerate
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, accelerate {accelerate.__version__}")
PY
timeout --signal=INT 480 "$PY" benchmarks/gpu_check.py "$@"
