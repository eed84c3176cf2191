#!/usr/bin/env bash
# The GPU check: one prepared script that runs in at most 10 minutes on one CUDA GPU.
#   the CUDA-only tests; epdo bench on CUDA for three specs (eager, TorchScript, onnxruntime's
#   CUDA provider, the .pt2 program); one epoch of mnist_regular_gauss on the sample in fp32
#   and with AMP. One JSON report: $OUT/gpu_check.json (or ./gpu_check.json).
#
# Usage (repository root, on the GPU machine):  bash scripts/gpu_check.sh [WHEELS]
#   WHEELS (default: wheels/): what that machine cannot download, installed offline: the
#   treverhines-rbf sdist and an onnxruntime-gpu wheel for its Python. The machine's own
#   torch is used (a venv with its site packages); nothing else is fetched.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
report="${OUT:-.}/gpu_check.json"
wheels="${1:-wheels}"
python3 -m venv --system-site-packages .gpu-venv
. .gpu-venv/bin/activate
if [ -d "$wheels" ]; then
  pip install -q --no-index --find-links "$wheels" treverhines-rbf onnxruntime-gpu \
    || echo "gpu_check: could not install from $wheels; using what is installed" >&2
fi
pip install -q --no-index --no-deps --no-build-isolation -e . \
  || { echo "gpu_check: epdo did not install" >&2; exit 2; }
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" \
  || { echo "gpu_check: torch sees no CUDA GPU" >&2; exit 3; }
spent=$(( $(date +%s) - start ))
python scripts/gpu_report.py "$report" --budget $(( 570 - spent ))
echo "gpu_check: report in $report after $(( $(date +%s) - start )) s"
