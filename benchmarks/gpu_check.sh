#!/usr/bin/env bash
# The GPU check of the locally connected layer and of model-parallel ranks on NCCL, in at most 5 minutes, on a
# machine with a CUDA GPU and a CUDA build of torch, with `pip install -e '.[gpu,dev]'` done:
#   1. the GPU's name (nvidia-smi),
#   2. the fused kernels' tests on CUDA, float32 and bfloat16 (tests/model/test_triton_local.py),
#   3. the layer at the paper's stage-1 shape (200x200x3, kernel 18, 8 maps, stride 1), batch 128/256/512,
#      float32 and bf16: TFLOP/s against the GPU's dense matmul rate measured in the same run, peak memory,
#   4. 20 training steps of the `paper` preset,
#   5. where 2 GPUs are visible: `--partitions 1x2 --device cuda` (a GPU per rank, NCCL) for 100 `small` steps,
#      its objectives against `--partitions 1x1`'s within 1e-3 relative (benchmarks/partitions_match.py), in what
#      is left of the 5 minutes; "skipped: needs 2 GPUs" otherwise.
# A failed part is reported and the next one still runs; the exit status says whether all passed.
#
#   bash benchmarks/gpu_check.sh            (PY=/path/to/python to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()

part() {  # part NAME SECONDS COMMAND...: run COMMAND under a time limit, note a failure
    local name=$1 limit=$2
    shift 2
    echo
    echo "== $name (at most ${limit} s) =="
    timeout --kill-after=5 "$limit" "$@" || { echo "!! $name failed (exit $?)"; failed+=("$name"); }
}

echo "== GPU =="
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || failed+=("nvidia-smi")
"$PY" -c 'import torch, triton; print(f"torch {torch.__version__}, triton {triton.__version__}"); assert torch.cuda.is_available(), "torch sees no CUDA device (a CPU build of torch?)"; print("device:", torch.cuda.get_device_name())' \
    || { echo "!! no usable CUDA torch with triton: stopping"; exit 1; }

part "kernel tests on CUDA" 100 "$PY" -m pytest -q -p no:cacheprovider tests/model/test_triton_local.py
part "layer sweep, paper stage-1 shape" 80 "$PY" benchmarks/gpu_layer.py --device cuda --shape paper --batches 128 256 512
part "20 paper training steps" 100 "$PY" benchmarks/paper_step.py --device cuda --steps 20

gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
left=$((295 - SECONDS))  # the script's 5 minutes
if ((gpus >= 2 && left >= 60)); then
    part "--partitions 1x2 on 2 GPUs (NCCL) against 1x1" "$left" "$PY" benchmarks/partitions_match.py \
        --device cuda --preset small --steps 100
else
    echo
    echo "== --partitions 1x2 on 2 GPUs (NCCL) against 1x1 =="
    if ((gpus < 2)); then
        echo "skipped: needs 2 GPUs ($gpus visible)"
    else
        echo "!! skipped: ${left} s left of the script's 5 minutes, 60 s needed"
        failed+=("partitions (no time left)")
    fi
fi

echo
if ((${#failed[@]})); then
    echo "gpu_check: FAILED: ${failed[*]}"
    exit 1
fi
echo "gpu_check: all parts passed"
