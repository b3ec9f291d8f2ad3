#!/usr/bin/env bash
# bench/ablation.py at the GPU scale: a larger learner (bench/ablation.py GPU_SETS: hidden 384, 6 layers,
# ~11M parameters, 12,000 bootstrap examples) trained from scratch on CUDA, --full (5 selection arms + the
# source table, 5 seeds), in slices that fit the device machine's 10-minute calls; each slice resumes the
# work directory the previous one left (keep the machine warm, or carry the work dir back).
#
#   bash bench/ablation_gpu.sh SECONDS [ablation.py args...]     # e.g. bash bench/ablation_gpu.sh 540
#   python bench/ablation.py --scale gpu --dry-run   # its CPU dry run (tests/test_ablation_dry_run.py)
#
# Expected GPU time (an estimate, not a measurement: no GPU run has been made): 60 runs (20 sweep runs on
# seed 0, 20 on seeds 1-4, 20 source-table runs) x ~6 rounds x ~30 s a round, 8 at a time on one H100/H200
# and 16 cores, plus round 0 (~3 min): about 25-30 GPU minutes, i.e. 3-4 slices of 540 s.
# The image needs zpd's dependencies (see bench/curriculum_device.sh for staging wheels into .stage/wheels).
set -u
cd "$(dirname "$0")/.."
secs=${1:?usage: bash bench/ablation_gpu.sh SECONDS [ablation.py args...]}; shift
work=.bench-ablation-gpu
mkdir -p "$work"
if ! python3 -c "import zpd.loop.cli, pydantic, sqlite_utils, math_verify" 2>/dev/null; then
    pip_i="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir"
    pip_i="$pip_i --disable-pip-version-check"
    $pip_i .stage/wheels/*.whl 2>/dev/null || $pip_i --break-system-packages .stage/wheels/*.whl || exit 1
    $pip_i --no-build-isolation -e . 2>/dev/null \
        || $pip_i --break-system-packages --no-build-isolation -e . || exit 1
fi
{ date -u; nproc; nvidia-smi -L 2>/dev/null; } | tee -a "$work/machine.txt"
echo "=== $(date -u +%FT%TZ) slice of ${secs}s: ablation.py --scale gpu --full $*" | tee -a "$work/bench.log"
began=$(date +%s)
PYTHONUNBUFFERED=1 MPLBACKEND=Agg timeout "$secs" python3 bench/ablation.py --scale gpu --full --jobs 8 \
    --work "$work" --out "$work/out" "$@" 2>&1 | tee -a "$work/bench.log"
rc=${PIPESTATUS[0]}
echo "=== $(date -u +%FT%TZ) exit $rc after $(( $(date +%s) - began )) s" | tee -a "$work/bench.log"
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/ablation-gpu.tgz" "$work/out" "$work/bench.log" "$work/machine.txt" "$work/tuning.json" \
        "$work"/runs/*.log 2>/dev/null
    # The state databases and pools: enough for `ablation.py --report-only --work DIR` elsewhere.
    tar czf - "$work"/round0/state.db* "$work"/runs/*/state.db* "$work/pool" 2>/dev/null \
        | split -b 15M - "$OUT/states.tgz."
fi
exit "$rc"
