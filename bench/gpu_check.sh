#!/usr/bin/env bash
# The GPU checks of the fast-computation work, in one short run (~2-3 min on an H200; give it timeout_s=420):
#   1. the compiled Triton kernel and the CPU kernel against the reference counts; the pipeline on
#      CUDA (Triton counts == bincount counts on the same activations; nvjpeg vs PIL EMD);
#   2. forward vs DNA throughput, ViT-B/16 and ResNet-50 (random weights: the offline GPU box
#      has no checkpoints; the cost is the architecture's), fp32 and bf16, batch 128, 1000 bins,
#      with upstream's one-histc-per-neuron loop for comparison;
#   3. per-layer counting time of each counter alone (both Triton methods, bincount) next to the bare
#      forward, ResNet-50 and ViT-B/16 in bf16 (what to fix next);
#   4. end-to-end `vdna add` images/s on 2-megapixel JPEGs, PIL workers vs nvjpeg (--decode torch).
# Usage (repository root, on the GPU machine): bash bench/gpu_check.sh [OUTDIR]
# Needs torch, torchvision, triton, timm, h5py, PIL, plus what the lent GPU box lacks (it has no
# internet): build a wheelhouse here first and carry it (well under the 64 MiB carry limit):
#   pip download -d wheels --only-binary=:all: pytest typer rich pyyaml huggingface_hub
# The sample images need scikit-learn/scikit-image; without them synthetic images are used.
set -uo pipefail
OUT="${1:-${OUT:-/tmp/vdna-gpu}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d wheels ]; then
    python -m pip install -q --no-index --find-links wheels pytest typer rich pyyaml huggingface_hub 2>&1 | tail -2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

timeout 150 python -m pytest -q -p no:cacheprovider tests/test_kernels_triton.py tests/test_kernels.py 2>&1 | tail -5 | tee "$OUT/kernels.txt"

timeout 90 python bench/gpu_pipeline_check.py cuda 2>&1 | tail -8 | tee "$OUT/pipeline.txt"

timeout 170 python bench/bench_dna.py --device cuda --random-weights --extractors mugs-vit-b16 rand-resnet50 \
    --precision fp32 bf16 --binning float32 vdna-0.1.1 --batch 128 --iters 8 --rounds 2 --upstream --e2e-images 0 \
    2>&1 | tee "$OUT/throughput.md"

timeout 90 python bench/bench_dna.py --device cuda --random-weights --extractors rand-resnet50 mugs-vit-b16 \
    --precision bf16 --batch 128 --iters 0 --e2e-images 0 --breakdown 2>&1 | tee "$OUT/breakdown.md"

timeout 170 python bench/profile_decode.py --images 1024 --workers "$(nproc)" 2>&1 | tee "$OUT/e2e.md"

VDNA_ORACLE_DEVICE=cuda timeout 80 python -m pytest -q -p no:cacheprovider -m "not slow" tests/test_upstream_networks.py \
    2>&1 | tail -4 | tee "$OUT/oracle_cuda.txt"
