#!/usr/bin/env bash
# Every GPU check of issue 16 in one go, on the GPU machine, from a checkout with .whl/ in it
# (tools/gpu/fetch_wheels.sh, run where a registry is reachable). Under 8 minutes in all: each
# check has its own time limit (cut further to what is left of TOTAL_S), so one that hangs or
# fails does not eat the rest; the benchmarks also stop starting new configs past a soft budget
# and write their rows as they go, so a check cut short keeps what it measured.
#
#   bash tools/gpu/run_all.sh                        # all checks
#   CHECKS="frames mfu" bash tools/gpu/run_all.sh    # a rerun of some
#   SMOKE=1 bash tools/gpu/run_all.sh                # on a CPU, tiny sizes, this environment's
#                                                    # packages (no install): the runner itself
#
#   check      item  tool                                  limit s
#   colour     6     tools/gpu_check_colour.py             45
#   inference  2     tools/bench_inference.py              140
#   frames     3     tools/bench_frames.py                 140
#   deepspeed  4     tools/gpu_check_deepspeed.py          150
#   mfu        5     tools/gpu_check_model.py --variants   120
#
# Writes $OUT (or /tmp/ua_gpu_out): results.md (the table), results.json, frames.png, logs.txt;
# prints every check's table, then one summary table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${OUT:-/tmp/ua_gpu_out}"
WORK=/tmp/ua_gpu_work
TOTAL_S="${TOTAL_S:-450}"
CHECKS="${CHECKS:-colour inference frames deepspeed mfu}"
start=$(date +%s)
mkdir -p "$OUT_DIR" "$WORK"
rm -f "$WORK"/*.json "$WORK"/*.log "$WORK"/*.png "$WORK"/status.tsv

if [[ "${SMOKE:-0}" == 1 ]]; then
    tiny=(--device cpu --preset tiny --height 32 --width 32)
    colour_args=(--device cpu --luma-frames 1)
    inference_args=("${tiny[@]}" --encoders tiny --frames 2 --steps 2 --variants float32:resident bfloat16:offload
        --workdir "$WORK/encoders")
    frames_args=("${tiny[@]}" --frames 2 4 --scan-backend torch)
    mfu_args=("${tiny[@]}" --frames 2 --matmul-n 256 --backends torch --variants eager channels_last)
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    echo "cpu (SMOKE=1: tiny sizes, no timings worth reading)" >"$WORK/gpu.txt"
else
    colour_args=()
    inference_args=()
    frames_args=(--frames 16 32 64 128)
    mfu_args=(--backends triton --variants eager channels_last compile compile+channels_last)
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run tools/gpu/fetch_wheels.sh first"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "installing .whl/*.whl failed"; exit 2; }
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$WORK/gpu.txt" 2>&1
fi
python3 -c "import torch, triton; print(f'torch {torch.__version__}, triton {triton.__version__}')" >>"$WORK/gpu.txt" 2>&1
echo "setup done in $(($(date +%s) - start)) s: $(tr '\n' ' ' <"$WORK/gpu.txt")"

check() { # check NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    case " $CHECKS " in *" $name "*) ;; *) return ;; esac
    local left=$((TOTAL_S - ($(date +%s) - start)))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        printf '%s\tskipped (no time left)\t0\n' "$name" >>"$WORK/status.tsv"
        return
    fi
    echo "== $name (limit $limit s)"
    local t0
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    printf '%s\t%s\t%s\n' "$name" "$?" "$(($(date +%s) - t0))" >>"$WORK/status.tsv"
}

check colour 45 python3 tools/gpu_check_colour.py "${colour_args[@]}" --json "$WORK/colour.json"
check inference 140 python3 tools/bench_inference.py "${inference_args[@]}" --budget-s 90 --json "$WORK/inference.json"
check frames 140 python3 tools/bench_frames.py "${frames_args[@]}" --budget-s 100 \
    --json "$WORK/frames.json" --plot "$WORK/frames.png"
check deepspeed 150 python3 tools/gpu_check_deepspeed.py --workdir /tmp/ua_deepspeed_check
check mfu 120 python3 tools/gpu_check_model.py "${mfu_args[@]}" --budget-s 60 --json "$WORK/mfu.json"

python3 tools/gpu/summarize.py "$WORK" "$OUT_DIR"
echo "total $(($(date +%s) - start)) s; files in $OUT_DIR"
