#!/usr/bin/env bash
# One command for a lent GPU machine (the `device` tool; its python3 already has torch, torchvision, typer, rich,
# safetensors, matplotlib): rebuild the dev set, time the shipped model with torch on CUDA (bench rows torch-fp32 and
# torch-fp16), then run a training campaign (benchmarks/campaign.py) inside a deadline, and pack what it made into
# $OUT/campaign.tar.gz (configs, metrics, curves, evaluations, logs; no weights) for benchmarks/results/.
# Here, before the call:  python benchmarks/device_data.py pack ../shared/cxr .gpudata/cxr  (carry .gpudata)
# Usage there: benchmarks/device_campaign.sh DEADLINE_S PARALLEL JOB... [-- --env VAR=VALUE ...]
set -uo pipefail
DEADLINE=${1:?seconds for the training campaign}; PARALLEL=${2:?jobs at a time}; shift 2
OUT=${OUT:-device-out}; mkdir -p "$OUT" logs
export PYTHONUNBUFFERED=1
T0=$(date +%s)
python3 benchmarks/device_data.py restore .gpudata/cxr --pool calibration_data || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
if [ "${BENCH:-1}" = 1 ]; then
  timeout 150 python3 -m edgecxr.cli bench --targets torch-fp32,torch-fp16 --out logs/bench-cuda 2>&1 | tail -20
fi
echo "setup and bench took $(( $(date +%s) - T0 )) s"
python3 benchmarks/campaign.py --deadline "$DEADLINE" --parallel "$PARALLEL" --data .gpudata/cxr/dev/MANIFEST.csv \
  --collect logs/results "$@"
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
tar czf "$OUT/campaign.tar.gz" logs
ls -la "$OUT"
echo "total $(( $(date +%s) - T0 )) s"
