#!/usr/bin/env bash
# The GPU measurements of the data-path issue, for a session whose task is lent a GPU machine (the device
# tool). That machine's image has torch, h5py, pandas, scikit-learn, safetensors, tqdm and yaml but not
# pydantic: `make gpu-wheels` here puts its wheels in .whl/ (git-ignored), which the run carries.
#
#   here:    make gpu-wheels
#   device:  run(command="bash benchmarks/gpu.sh step loader", carry=[".whl"])
#            run(command="bash benchmarks/gpu.sh epoch", carry=[".whl"])
#            (one call runs at most 10 minutes: parts not timed on a GPU yet, so one or two per call)
#   then:    the tables in $OUT/*.txt go to benchmarks/RESULTS.md with date, device and command.
#
# Parts: step (benchmarks/train_step.py: loop/fused, fp32/bf16, eager/compiled, MFU, and the profile of the
# fused bf16 step: its top kernels and the share of the expert weights' concatenation), loader
# (benchmarks/loader.py, 5,000 utterances, store on the GPU), epoch (benchmarks/epoch.py: one epoch of the
# train stage on a MOSEI-sized file, eager and compiled). `--smoke` runs each at a toy size (a CPU check
# of this script). Logs go to $OUT (the device tool's folder), else benchmarks/gpu-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/gpu-out}
mkdir -p "$out"
parts=() smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    step|loader|epoch) parts+=("$arg") ;;
    *) echo "gpu.sh: unknown part '$arg' (step, loader, epoch, --smoke)" >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(step loader epoch)

if ! python3 -c "import pydantic" 2>/dev/null; then
  [ -d .whl ] || { echo "gpu.sh: pydantic is missing and there is no .whl/: run 'make gpu-wheels' and carry .whl" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-compile --no-cache-dir --find-links .whl --target /tmp/site pydantic
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ date -u +%F; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU";
  python3 -c "import torch; print('torch', torch.__version__)"; git log -1 --format='commit %h %s' 2>/dev/null || true; } \
  | tee "$out/device.txt"

if [ $smoke = 1 ]; then
  step=(--only step --no-compile --repeats 1 --batch 2 --text-tokens 8 --audio-frames 16 --profile --d-model 64 --n-experts 3 --rank 8)
  loader=(--utterances 60 --seconds 0.5 --step-batch 2)
  epoch=(--scale 0.0005 --batch 4 --seconds 0.5)
else
  step=(--profile) loader=(--utterances 5000) epoch=(--modes eager,compiled)
fi
for part in "${parts[@]}"; do
  case "$part" in
    step) python3 benchmarks/train_step.py "${step[@]}" 2>&1 | tee "$out/train_step.txt" ;;
    loader) python3 benchmarks/loader.py "${loader[@]}" 2>&1 | tee "$out/loader.txt" ;;
    epoch) python3 benchmarks/epoch.py "${epoch[@]}" 2>&1 | tr '\r' '\n' | { grep -v -E '^train [^ ]+: +[0-9]+%' || true; } \
             | tee "$out/epoch.txt" ;;  # without the progress bar's redraws
  esac
done
