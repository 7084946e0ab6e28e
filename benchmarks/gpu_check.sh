#!/usr/bin/env bash
# The first GPU hour, in at most 8 minutes on one GPU (after the setup), from the working tree with ../shared beside it:
#   0. setup, not counted: a Python with a CUDA build of torch and Triton, else .venv-gpu made with them from PyPI
#      and this package installed editable (`pip install -e '.[gpu]' pytest`),
#   1. the GPU's name (nvidia-smi),
#   2. the fused kernels' tests on CUDA, float32, bf16 and tf32 (tests/model/test_triton_local.py),
#   3. the fake-CUDA tier's dtypes and host synchronisations per step against a real run's (tests/gpu/fake_paths.py,
#      on fake tensors, then --real),
#   4. the layer at the paper's stage-1 shape, batch 128/256/512: TFLOP/s against the same GPU's dense matmul in
#      float32, TF32 and bf16 (benchmarks/gpu_layer.py),
#   5. the plan on fake tensors (`catneuron info --device cuda`), then 20 `paper` training steps with their MFU and
#      the allocator's peak memory (benchmarks/paper_step.py), to compare with the plan,
#   6. in the time left (at least 60 s): a `paper` run on the embedded corpus for that long, its metrics.jsonl (with
#      MFU) and checkpoint kept; WATCH='NAME=DIR' adds `--watch NAME=DIR` (a folder of that concept's images).
# Everything is written to gpu_check-DATE.log and one JSON file of results, gpu_check-DATE.json, in OUT (default
# ./gpu_check): each part's status, seconds and last lines, the fake-vs-real comparison, and the run's last metrics.
# A failed part is reported and the next one still runs; the exit status says whether all passed.
#
#   bash benchmarks/gpu_check.sh            (PY=/path/to/python to choose the interpreter, OUT=folder)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check}
mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
LOG="$OUT/gpu_check-$stamp.log"
JSON="$OUT/gpu_check-$stamp.json"
PARTS="$OUT/.parts-$stamp.jsonl"
exec > >(tee -a "$LOG") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
failed=()

echo "== setup (not counted in the 8 minutes) =="
if ! "$PY" -c 'import torch, triton, catneuron; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "no CUDA torch with triton and catneuron in $PY: making .venv-gpu from PyPI"
    python3 -m venv .venv-gpu && PY=$PWD/.venv-gpu/bin/python
    "$PY" -m pip install -q --upgrade pip && "$PY" -m pip install -q torch triton && \
        "$PY" -m pip install -q -e '.[gpu]' pytest || { echo "!! setup failed: stopping"; exit 1; }
fi
SECONDS=0  # the 8 minutes start here
BIN=$(dirname "$PY")

part() {  # part NAME SECONDS COMMAND...: run COMMAND under a time limit, note its status, time and last lines
    local name=$1 limit=$2 status=0 start=$SECONDS
    shift 2
    echo
    echo "== $name (at most ${limit} s) =="
    timeout --kill-after=5 "$limit" "$@" > >(tee "$OUT/.last") 2>&1 || status=$?
    ((status)) && { echo "!! $name failed (exit $status)"; failed+=("$name"); }
    "$PY" - "$name" "$status" "$((SECONDS - start))" "$OUT/.last" >> "$PARTS" <<'EOF'
import json, sys
name, status, seconds, last = sys.argv[1:]
lines = open(last, errors="replace").read().splitlines()[-12:]
print(json.dumps({"part": name, "status": int(status), "seconds": int(seconds), "last_lines": lines}))
EOF
}

echo
echo "== GPU =="
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || failed+=("nvidia-smi")
"$PY" -c 'import torch, triton; print(f"torch {torch.__version__}, triton {triton.__version__}"); assert torch.cuda.is_available(), "torch sees no CUDA device (a CPU build of torch?)"; print("device:", torch.cuda.get_device_name())' \
    || { echo "!! no usable CUDA torch with triton: stopping"; exit 1; }

part "kernel tests on CUDA" 90 "$PY" -m pytest -q -p no:cacheprovider tests/model/test_triton_local.py
part "fake tier vs a real run: dtypes and host syncs" 90 "$PY" - "$OUT" <<'EOF'
import json, subprocess, sys
from catneuron.model import fake_cuda
fake = json.loads(fake_cuda.run(["tests/gpu/fake_paths.py"]).stdout)["train"]
real = json.loads(subprocess.run([sys.executable, "tests/gpu/fake_paths.py", "--real"], capture_output=True,
                                 text=True, check=True).stdout)["train"]
rows = {key: {"dtypes_equal": fake[key]["dtypes"] == run["dtypes"], "fake_syncs": len(fake[key]["syncs"]),
              "real_syncs": len(run["syncs"]), "off_device": run["off_device"]} for key, run in real.items()}
json.dump(rows, open(sys.argv[1] + "/.fake_vs_real.json", "w"))
print(json.dumps(rows, indent=1))
assert all(r["dtypes_equal"] and r["fake_syncs"] == r["real_syncs"] and not r["off_device"] for r in rows.values())
EOF
part "layer sweep, float32 and bf16" 70 "$PY" benchmarks/gpu_layer.py --device cuda --shape paper --batches 128 256 512
part "layer sweep, tf32" 40 "$PY" benchmarks/gpu_layer.py --device cuda --shape paper --batches 256 --dtypes float32 \
    --tf32
part "the plan on fake tensors" 60 "$BIN/catneuron" info --preset paper --device cuda --gpu-memory \
    "$("$PY" -c 'import torch; print(torch.cuda.mem_get_info()[1] / 1e9)')"
part "20 paper training steps" 100 "$PY" benchmarks/paper_step.py --device cuda --steps 20

left=$((470 - SECONDS))
if ((left >= 60)); then
    watch=()
    [[ -n "${WATCH:-}" ]] && watch=(--watch "$WATCH")
    part "a paper run for the time left" "$((left + 30))" "$BIN/catneuron" train --data embedded --preset paper \
        --device cuda --minutes "$(awk "BEGIN {print ($left - 30) / 60}")" --out "$OUT/paper-run-$stamp" "${watch[@]}"
else
    echo "!! no paper run: ${left} s left of the 8 minutes, 60 s needed"
    failed+=("paper run (no time left)")
fi

"$PY" - "$PARTS" "$OUT/.fake_vs_real.json" "$OUT/paper-run-$stamp/metrics.jsonl" "$JSON" "$SECONDS" "${failed[*]:-}" <<'EOF'
import json, sys
from pathlib import Path
parts, versus, metrics, out, seconds, failed = sys.argv[1:]
lines = Path(metrics).read_text().splitlines() if Path(metrics).is_file() else []
result = {"seconds": int(seconds), "failed": failed.split(), "parts": [json.loads(l) for l in open(parts)],
          "fake_vs_real": json.loads(Path(versus).read_text()) if Path(versus).is_file() else None,
          "paper_run_last_metrics": json.loads(lines[-1]) if lines else None}
Path(out).write_text(json.dumps(result, indent=1))
print(f"results: {out}")
EOF
echo "log: $LOG"
if ((${#failed[@]})); then
    echo "gpu_check: FAILED: ${failed[*]}"
    exit 1
fi
echo "gpu_check: all parts passed in ${SECONDS} s"
