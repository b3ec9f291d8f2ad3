#!/usr/bin/env bash
# bench/curriculum.py on the device machine (16 cores), in slices that fit its 10-minute calls.
#
#   bash bench/curriculum_device.sh SECONDS [curriculum.py args...]
#
# Carry `.stage` (git-ignored): .stage/wheels (pydantic, sqlite-utils, math-verify and their needs that the
# image lacks; the image's torch/transformers are used) and optionally .stage/round0seed (a round-0 work dir:
# round0.tar + round0/state.db, reused so the runs share a round 0 with another machine's run).
# Do NOT carry .bench-gpu: it is the work dir, kept on the machine between warm calls; a second call resumes.
# The bench runs under `timeout SECONDS`; what it has written is packed into $OUT either way.
set -u
cd "$(dirname "$0")/.."
secs=$1; shift
work=.bench-gpu
mkdir -p "$work"
if ! python3 -c "import zpd.loop.cli, pydantic, sqlite_utils, math_verify" 2>/dev/null; then
    pip_i="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check"
    $pip_i .stage/wheels/*.whl 2>/dev/null || $pip_i --break-system-packages .stage/wheels/*.whl || exit 1
    $pip_i --no-build-isolation -e . 2>/dev/null || $pip_i --break-system-packages --no-build-isolation -e . || exit 1
    python3 -c "import zpd.loop.cli; print('import zpd.loop.cli: ok')" || exit 1
    python3 -m zpd.loop.cli start --help | head -3
fi
if [ ! -f "$work/round0.tar" ] && [ -f .stage/round0seed/round0.tar ]; then
    cp -r .stage/round0seed/round0 .stage/round0seed/round0.tar "$work/"
fi
{ date -u; nproc; lscpu | grep -E "Model name|Thread|Core|Socket"; nvidia-smi -L 2>/dev/null; } | tee -a "$work/machine.txt"
echo "=== $(date -u +%FT%TZ) slice of ${secs}s: curriculum.py $*" | tee -a "$work/bench.log"
began=$(date +%s)
PYTHONUNBUFFERED=1 MPLBACKEND=Agg timeout "$secs" python3 bench/curriculum.py --work "$work" --out "$work/out" "$@" \
    2>&1 | tee -a "$work/bench.log"
rc=${PIPESTATUS[0]}
echo "=== $(date -u +%FT%TZ) exit $rc after $(( $(date +%s) - began )) s" | tee -a "$work/bench.log"
sleep 2
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/curriculum-gpu.tgz" "$work/out" "$work/bench.log" "$work/machine.txt" "$work"/runs/*.log 2>/dev/null
    [ -f "$work/out/README.md" ] && [ "$rc" = 0 ] && cp "$work/out/README.md" "$OUT/README.md"
    # The state databases: enough for `curriculum.py --report-only` elsewhere (split under the 16 MiB file limit).
    tar czf - "$work"/round0/state.db* "$work"/runs/*/state.db* 2>/dev/null | split -b 15M - "$OUT/states.tgz."
    ls -la "$OUT"
fi
exit "$rc"
