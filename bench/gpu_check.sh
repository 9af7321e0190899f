#!/usr/bin/env bash
# GPU check: on a GPU machine, in at most 5 minutes, generate a Kwai-shaped
# synthetic set, train UltraGCN-MM and a short InvRL schedule on CUDA, and print epoch
# time, evaluation time, peak GPU memory and host syncs per training step
# (bench/bench_gpu.py). Figures go to $OUT if it is set, else bench/out.
#
# For a GPU machine without a package registry (PyTorch with CUDA installed, RecBole not):
# on a machine with pip access, fetch the wheels first, then copy .whl/ with the checkout:
#     bash bench/gpu_check.sh --fetch          # wheels into .whl/ (ignored by git)
#     bash bench/gpu_check.sh [SCALE]          # on the GPU machine; SCALE: fraction of Kwai's size, default 1.0
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--fetch" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # RecBole and the two small packages it imports that the image lacks; pandas 2.3 for
    # an image with pandas 3 (RecBole 1.2.1's token_seq remapping fails on pandas 3).
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        recbole==1.2.1 colorlog==4.7.2 texttable==1.7.0 pandas==2.3.3
    ls -la .whl
    exit 0
fi

SCALE="${1:-1.0}"
RESULTS="${OUT:-bench/out}"
mkdir -p "$RESULTS"
if [[ -d .whl ]]; then
    skip_pandas=$(python3 -c 'import pandas; print(int(pandas.__version__.split(".")[0]) < 3)')
    wheels=$(ls .whl/*.whl | { if [[ "$skip_pandas" == 1 ]]; then grep -v '/pandas-'; else cat; fi; })
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site $wheels
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/gpu_check.txt"
python3 -c 'import torch, numpy, pandas, recbole; print("torch", torch.__version__, "numpy", numpy.__version__, "pandas", pandas.__version__, "recbole", recbole.__version__)' \
    | tee -a "$RESULTS/gpu_check.txt"
timeout 270 python3 bench/bench_gpu.py --scale "$SCALE" --out /tmp/gpu_check \
    --json "$RESULTS/gpu_check.json" 2> "$RESULTS/gpu_check.stderr.txt" | tee -a "$RESULTS/gpu_check.txt"
