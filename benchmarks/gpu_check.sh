#!/usr/bin/env bash
# Every GPU-only check and benchmark of the library in one script, for a lent GPU machine (one H100/H200: ~11 min).
#   bash benchmarks/gpu_check.sh            # results under benchmarks/results/*_cuda.{json,png} and $OUT if set
# It creates .venv with `make venv` if needed, runs the CUDA tests, then the GPU benchmarks. CPU CI never runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make venv >/dev/null
PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
status=0
run() { echo "== $*"; "$@" || status=1; }
run $PY -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py "tests/test_kernels.py::test_cuda_matches_cpu"
run timeout 120 $PY benchmarks/tokenize_kernels.py --device cuda
run timeout 150 $PY benchmarks/tokenize.py --device cuda --minutes 10 --repeats 2
run timeout 180 $PY -m benchmarks.lm --device cuda --preset 350m --context 1024 --batch 8 --steps 20 --warmup 3
run timeout 90 $PY -m benchmarks.vocoder --device cuda --skip-wer --utterances 64
run timeout 240 $PY -m benchmarks.duplex --device cuda --backbone 350m --dtype bfloat16 --every 60
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*_cuda.json benchmarks/results/*_cuda.png "$OUT"/ 2>/dev/null || true; fi
exit $status
