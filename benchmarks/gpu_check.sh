#!/usr/bin/env bash
# One GPU check: the device tests, then the optimiser, StyleGAN3, projection, music-video and
# instant-edit benchmarks on CUDA in float32 and autocast (bf16), each under its own time limit: the
# limits add up to 7.6 minutes, so the whole run stays under 8 on one H100 whatever happens (a step
# that runs out of time is reported as such). Everything goes into one summary file.
#
#   benchmarks/gpu_check.sh                      # CUDA, the real configurations (256 / 1024 px)
#   benchmarks/gpu_check.sh --device cpu         # tiny sizes on the CPU: checks that the check works
#   benchmarks/gpu_check.sh --out summary.md     # default: benchmarks/results/gpu_check-<device>-<time>.md
#
# Interpreter: $PYTHON, else .venv/bin/python (./sgim's), else python3. Exit status: the number of
# steps that failed or ran out of time (0 = all ran); their output is in the summary either way.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (--device cpu|cuda, --out FILE)" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-}"
[ -n "$python" ] || { [ -x .venv/bin/python ] && python=.venv/bin/python; } || python=python3
[ -n "$out" ] || out="benchmarks/results/gpu_check-${device%%:*}-$(date -u +%Y%m%dT%H%M%SZ).md"
mkdir -p "$(dirname "$out")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=0
started=$SECONDS

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), --device $device"
    echo
    echo '```'
    "$python" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(getconf _NPROCESSORS_ONLN) CPU cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo '```'
} >"$out" 2>&1

# step LIMIT_SECONDS TITLE COMMAND...: runs COMMAND under the limit, its output and outcome into the summary.
step() {
    local limit=$(( $1 * scale )) title="$2"
    shift 2
    local t0=$SECONDS status
    echo "[gpu_check] $(( SECONDS - started )) s: $title" >&2
    {
        echo
        echo "## $title"
        echo
        echo "\`$*\` (limit ${limit} s)"
        echo
        echo '```'
    } >>"$out"
    timeout --kill-after=10 "$limit" "$@" >>"$out" 2>&1
    status=$?
    echo '```' >>"$out"
    if [ "$status" -eq 0 ]; then
        echo "ok in $(( SECONDS - t0 )) s" >>"$out"
    else
        [ "$status" -eq 124 ] && echo "TIMED OUT after ${limit} s" >>"$out" || echo "FAILED (exit $status) after $(( SECONDS - t0 )) s" >>"$out"
        failed=$(( failed + 1 ))
    fi
}

if [ "${device%%:*}" = "cuda" ]; then
    scale=1
    precisions=(none bf16)
    gen=(--resolution 1024 --iters 3 --warmup 1)
    sg3=(--resolution 1024 --iters 2 --warmup 1 --pass step)
    opt=(--configs 256,1024 --batches 1 --no-lean --steps 4)
    opt_autocast=(--configs 1024 --batches 1 --no-lean --steps 4)
    proj=(--resolutions 256 1024 --steps 4 --warmup 2)
    anim=(--configs 256,1024 --steps 4 --decode-batches 4 --memory-seconds "")
    inst=(--configs 256,1024 --opt-steps 60)
else  # the CPU: tiny sizes, float32 only (autocast is offered on CUDA only), roomier limits
    scale=4
    precisions=(none)
    gen=(--quick)
    sg3=(--quick --pass step)
    opt=(--quick --batches 1 --no-lean)
    opt_autocast=("${opt[@]}")
    proj=(--quick)
    anim=(--quick --memory-seconds "")
    inst=(--quick)
fi

step 40 "device tests (tests/test_device_paths.py)" \
    env SGIM_CHECK_DEVICE="$device" "$python" -m pytest -q -rs tests/test_device_paths.py
for precision in "${precisions[@]}"; do
    label=$([ "$precision" = none ] && echo float32 || echo "$precision autocast")
    dtype=$([ "$precision" = none ] && echo float32 || echo bfloat16)
    autocast=(--device "$device" --autocast "$precision")
    step 30 "StyleGAN2 generator, $dtype weights" \
        "$python" benchmarks/bench_generator.py --device "$device" --dtype "$dtype" "${gen[@]}"
    [ "$precision" = none ] && step 55 "StyleGAN3 T and R, optimiser step, float32" \
        "$python" benchmarks/bench_generator.py --family stylegan3 --device "$device" "${sg3[@]}"
    if [ "$precision" = none ]; then
        step 75 "optimiser, $label" "$python" benchmarks/bench_optimize.py "${autocast[@]}" "${opt[@]}"
    else
        step 40 "optimiser, $label" "$python" benchmarks/bench_optimize.py "${autocast[@]}" "${opt_autocast[@]}"
    fi
    step 35 "projection and tuning, $label" "$python" benchmarks/bench_project.py "${autocast[@]}" "${proj[@]}"
    step 35 "music video (keyframes, decoding), $label" "$python" benchmarks/bench_animate.py "${autocast[@]}" "${anim[@]}"
done
if [ -f benchmarks/bench_instant.py ]; then
    step 45 "instant edit, float32 (its benchmark has no autocast option)" \
        "$python" benchmarks/bench_instant.py --device "$device" "${inst[@]}"
else
    echo -e "\n## instant edit\n\nbenchmarks/bench_instant.py is not in this checkout: skipped" >>"$out"
fi

echo -e "\n---\n$(( SECONDS - started )) s in all; $failed step(s) failed or timed out" >>"$out"
echo "[gpu_check] $(( SECONDS - started )) s, $failed failed; summary: $out" >&2
exit "$failed"
