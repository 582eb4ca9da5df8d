#!/usr/bin/env bash
# GPU figures of issue 27 item 5, in one short run (about 8 minutes on one H100/H200-class GPU).
# Usage: bash benchmarks/gpu_check.sh [OUT]   (from the repository root; OUT default gpu_check)
# Writes OUT/*.log: inference throughput in bf16 at batch 1 and 64, eager and decode workers;
# training step throughput; GPU utilisation during a refiner epoch with the cached, grouped loader.
set -euo pipefail
OUT=${1:-gpu_check}
mkdir -p "$OUT"
PY=${PY:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv"

# 1. inference: the pipeline alone (default sizes, TTA, random weights), bf16, batch 1 and 64
$PY benchmarks/speed.py --device cuda --precision bf16-mixed --batch 1 64 --repeats 5 \
    > "$OUT/speed_bf16.log" 2>&1

# 2. inference with decoding workers: predict over 200 radiographs 2560x2048 (bf16, batch 64)
$PY benchmarks/archive.py throughput --num 200 --workers 8 16 --batch 64 --accelerator gpu \
    --precision bf16-mixed > "$OUT/archive.log" 2>&1 || true

# 3. training step throughput (forward + backward + AdamW), bf16
$PY benchmarks/train_speed.py --device cuda --precision bf16 --steps 20 > "$OUT/train_speed.log" 2>&1

# 4. GPU utilisation during a refiner epoch on 3000-px phantoms with the new loader
D="$OUT/data3000"
[ -d "$D" ] || $PY -m spinelandmarks.cli synth "$D" --num-images 120 --size 3000 --workers 16 \
    > "$OUT/synth.log" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 \
    > "$OUT/util_refiner.csv" &
SMI=$!
$PY -m spinelandmarks.cli train "$D" --out "$OUT/run" --stages landmark,refiner \
    --max-epochs 1 --refiner-epochs 3 --accelerator gpu --precision bf16-mixed --workers 12 \
    --cache memory --overwrite > "$OUT/train_refiner.log" 2>&1 || true
kill "$SMI"
echo "done: $OUT"
