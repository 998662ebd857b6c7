#!/usr/bin/env bash
# Stage-2 train step and one sampling clip at paper shapes on one NVIDIA GPU; results to $OUT/gpu.json if OUT is
# set, else benchmarks/results/gpu.json (benchmarks/results/gpu_cpu.json without a GPU).
#
#     bash benchmarks/gpu.sh [benchmarks/gpu.py arguments]
#
# What it measures and the device-time estimate (about 5-7 minutes on an H100, under 8 with the install):
# benchmarks/gpu.py's docstring.
#
# Which interpreter runs it:
# - python3 sees a GPU through jax: that python3. Packages it lacks travel as wheels in .whl/ at the repo root
#   (pure-Python ones such as ml_collections; `python3 -m pip download --no-deps --only-binary=:all:
#   --python-version 3.12 --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0`), installed here into
#   /tmp/emo_site without the network. The repo itself goes on PYTHONPATH, not through pip.
# - nvidia-smi finds a GPU but jax does not: `pip install -e ".[gpu]"` (needs the network), then as above.
# - no GPU: the tiny config on CPU with a notice (CI runs this), with the repo's .venv if there is one.
# PYTHON=/path/to/python picks the interpreter on CPU (a GPU is looked for with python3).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

jax_sees_gpu() { "$1" -c "import jax, sys; sys.exit(0 if jax.devices('gpu') else 1)" >/dev/null 2>&1; }

PY="${PYTHON:-python3}"
if ! jax_sees_gpu python3 && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: nvidia-smi lists a GPU but jax does not see it; installing emo-jax with its [gpu] extra" >&2
  python3 -m pip install -q -e ".[gpu]" || echo "gpu.sh: the install failed (no network?)" >&2
fi

if jax_sees_gpu python3; then
  PY=python3
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu.sh: installing $(ls .whl/*.whl | wc -l) carried wheel(s) from .whl/ into /tmp/emo_site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/emo_site \
      .whl/*.whl
    export PYTHONPATH="/tmp/emo_site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  # Stage 2 at paper shapes needs ~45 GB of train state before activations; jax preallocates 75% by default.
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
else
  echo "gpu.sh: NOTICE: no NVIDIA GPU visible to jax; running the tiny config on CPU (checks that the benchmark" \
       "runs, says nothing about GPU speed)"
  [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
  export JAX_PLATFORMS=cpu
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import jax, flax, optax, ml_collections" 2>/dev/null; then
  echo "gpu.sh: $PY lacks one of jax, flax, optax, ml_collections; pip install -e '.[gpu]' on a networked" \
       "machine, or put the missing wheels in .whl/" >&2
  exit 1
fi
"$PY" -c 'import sys, jax; print("gpu.sh:", sys.executable, "jax", jax.__version__, jax.devices()[0].device_kind)'
exec "$PY" benchmarks/gpu.py "$@"
