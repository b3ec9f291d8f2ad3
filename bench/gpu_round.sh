#!/usr/bin/env bash
# bench/gpu_round.sh: zpd's GPU check. One real verl-SFT round of zpd, end to end, on ONE H100/H200 with no
# internet and no vLLM, plus one step timing embedded generation and training on CUDA. Run it from the repo
# root. Three modes, because the wheels verl needs (ray alone is ~70 MB) do not fit in one 64 MiB carry:
#
#   bash bench/gpu_round.sh prepare   # HERE, where pip reaches PyPI: download every wheel the GPU image lacks
#                                     #   (verl 0.9.1 + its imports + zpd's own deps) into .stage/a and .stage/b,
#                                     #   git-ignored; checks that each bundle PLUS the working tree is < 64 MiB.
#   bash bench/gpu_round.sh stage     # GPU call 1, carry [".stage/a"]: copies .stage/a into $STAGE (~/stage).
#   bash bench/gpu_round.sh run       # GPU call 2 (right after, on the same warm machine), carry [".stage/b"]:
#                                     #   installs everything into $SITE and runs the steps below.
#   GPU_ROUND_DRYRUN=1 bash bench/gpu_round.sh run
#                                     # CPU dry run (CI): this environment's packages, learner on device=cpu,
#                                     #   GPU-only steps SKIPped; checks that the script, its round config and
#                                     #   zpd's verl overrides (against verl's Hydra config) fit the current code.
#
# Budget: call 1 about 1-2 min, call 2 capped at BUDGET_S=400 s: both fit the device's 9 minutes together.
#
# Steps of "run" (each prints PASS/FAIL/SKIP; exit non-zero on the first FAIL that blocks the rest):
#   S0 GPU + image     S1 wheels installed, verl 0.9.1/ray/transfer_queue/uvicorn import
#   S2 zpd importable  S3 zpd's own preflight (the one `zpd start` runs) accepts this machine
#   S4 verl's Hydra accepts zpd's SFT overrides (real CLI, --cfg job)
#   S5 `zpd start --config <verl-sft round config> --rounds 1` exits 0 (bootstrap on cuda, then round 1 trains
#      with torchrun -m verl.trainer.sft_trainer, ingests the checkpoint, measures, commits); the GPU's
#      utilisation is sampled meanwhile (nvidia-smi) for S10's busy share
#   S6 round 1 really went through verl: step lines in verl.log, global_step_N/ with fsdp_config.json and
#      huggingface/ weights, latest_checkpointed_iteration.txt
#   S7 round 1 is committed and its learner is a loadable HF model whose weights differ from round 0's
#   S8 verl.model_merger (ingest's path for LoRA and when huggingface/ has no weights) rebuilds the weights
#   S9 only if S5 failed or never launched verl, and time is left: zpd's train_with_verl alone
#   S10 embedded generation and SFT on CUDA with a >= 20M-parameter learner: tokens/s each, and the GPU's
#      busy share during S5's round (dry run: a tiny learner on CPU, figures meaningless)
# Outputs: $OUT (the folder that comes back from the GPU machine) or ./gpu-round-out: summary.txt, logs.
# Results go to bench/results/gpu-round.md.
set -uo pipefail
# python -c / -m put the working directory first on sys.path, and the repo's zpd/ folder (only __init__.py)
# would shadow the staged package: never let the working directory onto sys.path, here or in children.
export PYTHONSAFEPATH=1

MODE=${1:-run}
ROOT=$(pwd)
STAGE=${STAGE:-$HOME/stage}
SITE=${SITE:-$HOME/site}
PY=${PY:-python3}
RESULTS=${OUT:-$ROOT/gpu-round-out}
WORK=${WORK:-/tmp/zpd-gpu-round}
BUDGET_S=${BUDGET_S:-400}
DRY=${GPU_ROUND_DRYRUN:-0}
DEVICE=cuda; [ "$DRY" = 1 ] && DEVICE=cpu
DEADLINE=$(( $(date +%s) + BUDGET_S ))
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/summary.txt"

say()  { echo "$*" | tee -a "$SUMMARY"; }
pass() { say "PASS $1: ${2:-}"; }
fail() { say "FAIL $1: ${2:-}"; }
skip() { say "SKIP $1: ${2:-}"; }
left() { echo $(( DEADLINE - $(date +%s) )); }
die()  { fail "$1" "$2"; say "== stopped at $1 (blocking) =="; exit 1; }

# Versions: stage-verl.sh's set (seen working for verl SFT on an H100, 2026-11-22) plus what zpd and
# zpd's preflight need on top (transfer_queue + msgspec, sqlite-utils, math-verify).
VERL_WHEELS=(verl==0.9.1 hydra-core==1.3.8 omegaconf==2.3.1 codetiming==1.4.0 colorful==0.5.8
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
  pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2 opentelemetry-exporter-prometheus==0.66b2
  orjson==3.13.0 pyvers==0.1.0 pyzmq==27.3.0 sniffio==1.3.1 tensordict==0.10.0 torchdata==0.11.0
  TransferQueue==0.1.11 msgspec==0.23.0
  sqlite-utils==4.2.1 sqlite-fts4==1.0.3 click-default-group==1.2.4
  math-verify==0.9.0 latex2sympy2_extended==1.11.0)
RAY=ray==2.60.0

if [ "$MODE" = prepare ]; then
  set -e
  git rev-parse --show-toplevel >/dev/null
  grep -qx '/.stage/' .git/info/exclude 2>/dev/null || echo '/.stage/' >> .git/info/exclude
  rm -rf .stage && mkdir -p .stage/a .stage/b .stage/dl
  plat=(--only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64)
  python3 -m pip download -q --no-deps "${plat[@]}" -d .stage/dl "${VERL_WHEELS[@]}" "$RAY"
  # antlr4 4.9.3 (hydra's pin; math-verify accepts it) exists as an sdist only: build its pure-Python wheel.
  python3 -m pip wheel -q --no-deps -w .stage/dl antlr4-python3-runtime==4.9.3
  ray=$(ls .stage/dl/ray-*.whl)
  split -b 45M "$ray" .stage/ray.part-
  echo "$(basename "$ray")" > .stage/b/ray.name
  mv .stage/ray.part-aa .stage/a/
  mv .stage/ray.part-a[b-z] .stage/b/
  rm "$ray"
  mv .stage/dl/*.whl .stage/a/ && rmdir .stage/dl
  du -sh .stage/a .stage/b
  # A call carries the working tree (tracked + untracked, not ignored) plus the bundle: both count.
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  for d in .stage/a .stage/b; do
    b=$(du -sb "$d" | cut -f1)
    echo "$d: $(( b / 1048576 )) MiB + working tree $(( tree / 1048576 )) MiB"
    [ $(( b + tree )) -lt $(( 63 * 1048576 )) ] || { echo "$d plus the working tree is over the 64 MiB carry limit"; exit 1; }
  done
  echo "prepared: carry .stage/a in call 1 (bash bench/gpu_round.sh stage), .stage/b in call 2 (... run)"
  exit 0
fi

if [ "$MODE" = stage ]; then
  mkdir -p "$STAGE" && cp .stage/a/* "$STAGE"/ && ls "$STAGE" | wc -l | xargs echo "staged files:" && exit 0
  echo "FAIL stage: .stage/a missing (run 'bash bench/gpu_round.sh prepare' where pip works)"; exit 1
fi

[ "$MODE" = run ] || { echo "usage: $0 prepare|stage|run"; exit 2; }
: > "$SUMMARY"
say "== zpd one-GPU verl-SFT round, $(date -u +%FT%TZ), root $ROOT, device $DEVICE, dry run $DRY, verl.micro_batch_size_per_gpu=${MICRO:-4} =="

# -- S0: the machine ---------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then skip S0 "dry run: no GPU asked for"
elif info=$($PY - <<'EOF' 2>&1
import sys, torch, transformers
assert torch.cuda.is_available(), "torch sees no CUDA GPU"
free, total = torch.cuda.mem_get_info()
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, {free/2**30:.0f}/{total/2**30:.0f} GiB free")
EOF
); then pass S0 "$info"; else die S0 "$info"; fi

# -- S1: wheels --------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  skip S1 "dry run: this environment's packages, nothing installed"
elif [ "${SKIP_INSTALL:-0}" != 1 ]; then
  mkdir -p "$STAGE"
  for d in .stage/a .stage/b; do [ -d "$d" ] && cp "$d"/* "$STAGE"/ 2>/dev/null; done
  if [ -f "$STAGE/ray.name" ] && ls "$STAGE"/ray.part-* >/dev/null 2>&1; then
    cat "$STAGE"/ray.part-* > "$STAGE/$(cat "$STAGE/ray.name")"
  fi
  if out=$($PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$STAGE"/*.whl 2>&1); then
    :
  else
    die S1 "pip install from $STAGE failed (did call 1 'stage' run on this same warm machine?): ${out: -600}"
  fi
fi
[ "$DRY" = 1 ] || export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if out=$($PY -c "
import importlib.util as u, verl, ray, hydra, pydantic, sqlite_utils, math_verify
miss=[m for m in ('uvicorn','transfer_queue','tensordict','torchdata') if u.find_spec(m) is None]
assert not miss, f'missing {miss}'
assert verl.__version__ == '0.9.1', verl.__version__
print('verl', verl.__version__, 'ray', ray.__version__, 'pydantic', pydantic.VERSION)" 2>&1 | tail -1); then
  [ "$DRY" = 1 ] || pass S1 "$out"
else die S1 "$out"; fi

# -- S2: zpd itself (its package-dir layout: zpd/ + loop trainer store configs, copied, no build) -------
ZPKG="$WORK/pkg"
rm -rf "$ZPKG" && mkdir -p "$ZPKG/zpd"
cp -r zpd/. "$ZPKG/zpd/" && for d in loop trainer store configs; do cp -r "$d" "$ZPKG/zpd/$d"; done
export PYTHONPATH="$ZPKG${PYTHONPATH:+:$PYTHONPATH}"
if out=$($PY -c "import zpd, zpd.trainer.verl, zpd.loop.cli; print('zpd', zpd.__version__)" 2>&1 | tail -1); then
  pass S2 "$out"
else die S2 "$out"; fi
ZPD=("$PY" -m zpd.loop.cli)

# The round's config: configs/verl-sft.toml's [train]/[verl] choices on configs/smoke.toml's tiny learner
# and short phases, learner on cuda, storage.shared_dir so verl's round directory outlives the commit.
rm -rf "$WORK/state" "$WORK/shared" && mkdir -p "$WORK"
CFG="$WORK/verl-sft-round.toml"
cat > "$CFG" <<EOF
[run]
seed = 0
[learner]
device = "$DEVICE"
hidden_size = 64
num_layers = 2
num_heads = 4
intermediate_size = 128
max_positions = 128
[bootstrap]
num_examples = 3000
max_solo_difficulty = 1.0
max_guided_difficulty = 2.0
guided_fraction = 0.75
epochs = 4.0
learning_rate = 3e-3
[domains.arithmetic]
min_difficulty = 1
max_difficulty = 4
eval_per_level = 4
[synthesis]
num_candidates = 24
[calibration]
num_solo = 2
num_guided = 2
max_tokens = 48
batch_size = 8
[measure]
max_tokens = 48
[exam]
admit_per_round = 2
max_items = 20
[train]
backend = "verl-sft"
epochs = 1.0
batch_size = 16
timeout_seconds = 300
max_retries = 0
retry_backoff_seconds = 1
[storage]
keep_all = true
shared_dir = "$WORK/shared"
[verl]
placement = "local"
n_gpus_per_node = 1
learning_rate = 1e-3
# verl-sft.toml's value; zpd's schedule makes every per-GPU batch a multiple of it (verl asserts that).
micro_batch_size_per_gpu = ${MICRO:-4}
checkpoint_interval_minutes = 1.0
max_length = 256
attn_implementation = "sdpa"
[metrics]
port = 0
[logging]
progress = false
EOF

# -- S3: zpd's preflight, exactly what `zpd start` runs first ------------------------------------------
if [ "$DRY" = 1 ]; then skip S3 "dry run: the preflight asks for a CUDA GPU (tests/test_verl_preflight.py checks its refusal)"
elif out=$($PY -c "
from zpd.configs.load import load_config
from zpd.trainer.verl import preflight
from pathlib import Path
preflight(load_config(Path('$CFG'), [])); print('preflight accepts: verl-core present, CUDA GPU seen')" 2>&1 | tail -1); then
  pass S3 "$out"
else fail S3 "$out"; fi

# -- S4: verl's own Hydra config takes zpd's overrides (the CLI zpd launches, --cfg job) ----------------
if out=$($PY - "$CFG" "$WORK/s4" <<'EOF' 2>&1 | tail -2
import subprocess, sys
from pathlib import Path
from zpd.configs.load import load_config
from zpd.trainer.model import create_learner
from zpd.trainer.verl import build_sft_overrides, data
from zpd.trainer.verl.overrides import RoundPaths
cfg = load_config(Path(sys.argv[1]), []); w = Path(sys.argv[2]); w.mkdir(parents=True, exist_ok=True)
create_learner(w / "l", cfg.learner, seed=0)
rows = [{"prompt": f"{a}+{b}", "response": str(a + b)} for a in range(5) for b in range(5)]
data.write_sft_parquet(rows, w / "t.parquet")
ovr = build_sft_overrides(cfg, RoundPaths(w / "t.parquet", w / "l", w / "ckpt"), num_rows=len(rows), round_n=1, resume=False)
p = subprocess.run([sys.executable, "-m", "verl.trainer.sft_trainer", "--cfg", "job", *ovr], capture_output=True, text=True, timeout=120)
print(p.stderr[-500:] if p.returncode else f"{len(ovr)} overrides compose")
sys.exit(p.returncode)
EOF
); then pass S4 "$out"; else fail S4 "$out"; fi

# -- S5: the round -----------------------------------------------------------------------------------
STATE="$WORK/state"
T=$(( $(left) - 60 )); [ "$T" -gt 420 ] && T=420
if [ "$DRY" = 1 ]; then
  skip S5 "dry run: verl's trainers need a CUDA GPU (NCCL)"; s5=skip
elif [ "$T" -lt 120 ]; then
  skip S5 "only $(left) s left"; s5=skip
else
  t0=$(date +%s)
  smi=""
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$RESULTS/gpu-util.csv" 2>/dev/null &
    smi=$!
  fi
  timeout --kill-after=15 "$T" "${ZPD[@]}" start --config "$CFG" --state-dir "$STATE" --rounds 1 \
    > "$RESULTS/zpd-start.log" 2>&1
  rc=$?
  [ -n "$smi" ] && kill "$smi" 2>/dev/null
  if [ $rc -eq 0 ]; then pass S5 "zpd start --rounds 1 exited 0 in $(( $(date +%s) - t0 )) s"; s5=ok
  else fail S5 "zpd start exited $rc after $(( $(date +%s) - t0 )) s (124 = our ${T}s timeout): $(tail -c 700 "$RESULTS/zpd-start.log" | tr '\n' ' ')"; s5=fail
  fi
fi
cp "$STATE"/logs/* "$RESULTS"/ 2>/dev/null; ls "$RESULTS"/ >/dev/null

# -- S6: it went through verl ------------------------------------------------------------------------
RD="$WORK/shared/verl/round_000001"
if [ "$DRY" = 1 ]; then
  skip S6 "dry run: no verl round (tests/test_verl_schedule.py and test_verl_backend.py stand in)"
elif [ -f "$RD/verl.log" ]; then
  tail -c 1000000 "$RD/verl.log" > "$RESULTS/verl.log"
  out=$($PY - "$RD" <<'EOF' 2>&1 | tail -1
import json, sys
from pathlib import Path
rd = Path(sys.argv[1]); ck = rd / "ckpt"
steps = [l for l in (rd / "verl.log").read_text(errors="replace").splitlines() if "step:" in l and "train/loss:" in l]
assert steps, "no 'step:N - train/loss:...' line in verl.log"
tracker = (ck / "latest_checkpointed_iteration.txt").read_text().strip()
g = ck / f"global_step_{tracker}"
need = ["model_world_size_1_rank_0.pt", "fsdp_config.json", "huggingface/config.json"]
miss = [n for n in need if not (g / n).exists()]
assert not miss, f"missing in {g}: {miss}"
assert list((g / "huggingface").glob("*.safetensors")), "huggingface/ holds no weights (hf_model not saved)"
print(f"{len(steps)} step lines, last: {steps[-1][-120:]}; checkpoint {g.name} with shards, fsdp_config.json, huggingface/ weights")
EOF
)
  if [ $? -eq 0 ]; then pass S6 "$out"; else
    hint=$(grep -m1 -o -E "data size must be divisible by force_group_size \* micro_batch_size_per_gpu|CUDA out of memory|No module named '[^']+'|pad_mode right not supported|flash_attn[^ ]*" "$RD/verl.log")
    fail S6 "$out${hint:+ | verl.log: $hint}"
  fi
else
  if grep -q "too few new examples" "$STATE"/logs/* 2>/dev/null; then
    fail S6 "round 1 had too few new examples, so the learner was kept and verl never ran (nothing was tested)"
  else
    fail S6 "no $RD/verl.log: verl was not launched for round 1"
  fi
fi

# -- S7: committed, loadable, changed ----------------------------------------------------------------
if [ "$s5" != skip ]; then
  "${ZPD[@]}" status --state-dir "$STATE" --json > "$RESULTS/status.json" 2>&1
  out=$($PY - "$STATE" <<'EOF' 2>&1 | tail -1
import sqlite3, sys, torch
from pathlib import Path
from safetensors.torch import load_file
st = Path(sys.argv[1])
db = sqlite3.connect(st / "state.db")
rows = dict(db.execute("SELECT id, status FROM rounds").fetchall())
assert rows.get(1) == "committed", f"rounds: {rows}"
from zpd.store.rounds import round_dir
l0, l1 = round_dir(st, 0) / "learner", round_dir(st, 1) / "learner"
from zpd.trainer.model import load_learner
model, tok = load_learner(l1, "cpu")
a = load_file(str(next(l0.glob("*.safetensors")))); b = load_file(str(next(l1.glob("*.safetensors"))))
common = [k for k in a if k in b]
assert common, f"no common tensor names: {list(a)[:3]} vs {list(b)[:3]}"
d = max((a[k].float() - b[k].float()).abs().max().item() for k in common)
assert d > 0, "round 1's learner has round 0's weights (training changed nothing)"
missing = [k for k in a if k not in b]
print(f"round 1 committed; learner loads ({sum(p.numel() for p in model.parameters())} params); max |w1-w0| = {d:.3g}; "
      f"tensors missing vs round 0: {len(missing)}")
EOF
)
  if [ $? -eq 0 ]; then pass S7 "$out"; else fail S7 "$out"; fi
fi

# -- S8: the merger (ingest's path when huggingface/ has no weights, e.g. save_contents without hf_model) --
if [ -f "$RD/ckpt/latest_checkpointed_iteration.txt" ] && [ "$(left)" -gt 40 ]; then
  g="$RD/ckpt/global_step_$(cat "$RD/ckpt/latest_checkpointed_iteration.txt")"
  if timeout 120 $PY -m verl.model_merger merge --backend fsdp --local_dir "$g" --target_dir "$WORK/merged" \
       > "$RESULTS/merger.log" 2>&1; then
    out=$($PY - "$g/huggingface" "$WORK/merged" <<'EOF' 2>&1 | tail -1
import sys
from pathlib import Path
from safetensors.torch import load_file
def sd(d): 
    out = {}
    for f in Path(d).glob("*.safetensors"): out.update(load_file(str(f)))
    return out
a, b = sd(sys.argv[1]), sd(sys.argv[2])
common = [k for k in a if k in b]
assert common, f"no common tensors: {list(a)[:3]} / {list(b)[:3]}"
d = max((a[k].float() - b[k].float()).abs().max().item() for k in common)
assert d < 1e-2, f"merger weights differ from huggingface/ by {d}"
print(f"merger output matches huggingface/ ({len(common)} tensors, max diff {d:.2g}; dtypes {a[common[0]].dtype}/{b[common[0]].dtype})")
EOF
)
    if [ $? -eq 0 ]; then pass S8 "$out"; else fail S8 "$out"; fi
  else fail S8 "verl.model_merger failed: $(tail -c 500 "$RESULTS/merger.log" | tr '\n' ' ')"; fi
else skip S8 "no checkpoint, or too little time ($(left) s) (dry run: tests/test_verl_lora.py runs the merger on CPU)"; fi

# -- S9: isolate verl + ingest when the daemon round failed --------------------------------------------
if [ "$DRY" != 1 ] && { [ "$s5" = fail ] || [ ! -f "$RD/verl.log" ]; } && [ "$(left)" -gt 150 ]; then
  out=$(timeout $(( $(left) - 20 )) $PY - "$CFG" "$WORK/s9" <<'EOF' 2>&1 | tail -3
import sys, math
from pathlib import Path
from zpd.configs.load import load_config
from zpd.trainer.model import create_learner, load_learner
from zpd.trainer.verl import train_with_verl
cfg = load_config(Path(sys.argv[1]), []); w = Path(sys.argv[2]); cfg.storage.shared_dir = None
create_learner(w / "learner", cfg.learner, seed=0)
rows = [{"prompt": f"{a}+{b}", "response": str(a + b), "domain": "arithmetic", "answer": str(a + b)} for a in range(8) for b in range(8)]
r = train_with_verl(cfg, backend="verl-sft", learner_dir=w / "learner", rows=rows, out_dir=w / "out", work_dir=w / "work",
                    round_n=1, on_progress=lambda e: print("progress", e), should_stop=None, resume=False)
load_learner(w / "out", "cpu")
assert r.num_steps >= 1 and math.isfinite(r.loss), r
print(f"train_with_verl alone works: {r}")
EOF
)
  if [ $? -eq 0 ]; then pass S9 "$(echo "$out" | tail -1) (so S5's failure is in the daemon, not verl)"
  else fail S9 "$(echo "$out" | tr '\n' ' ' | tail -c 700)"; cp "$WORK"/s9/work/verl/verl.log "$RESULTS/verl-s9.log" 2>/dev/null; fi
fi

# -- S10: embedded generation and training on CUDA, a >= 20M-parameter learner ---------------------------
if [ "$(left)" -gt 30 ]; then
  out=$(timeout $(( $(left) - 10 )) $PY - "$DEVICE" "$WORK/s10" "$RESULTS/gpu-util.csv" <<'EOF' 2>&1 | tail -1
import shutil, sys, time
from pathlib import Path
import torch
from zpd.configs.schema import LearnerConfig
from zpd.trainer.generate import EmbeddedGenerator
from zpd.trainer.model import create_learner, num_parameters
from zpd.trainer.sft import SFTExample, train_sft
device, w, util = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
shutil.rmtree(w, ignore_errors=True)
big = device == "cuda"  # the dry run checks the code path with a tiny learner on CPU
cfg = LearnerConfig(hidden_size=512 if big else 32, num_layers=6 if big else 1, num_heads=8 if big else 2,
                    intermediate_size=2048 if big else 64, max_positions=256 if big else 64)
create_learner(w / "l", cfg, seed=0)
params = num_parameters(w / "l")
assert params >= 20e6 or not big, params
prompts = [f"{a}+{b}" for a in range(16) for b in range(16)][: 256 if big else 8]
gen = EmbeddedGenerator(w / "l", device=device, batch_size=256 if big else 8)
t0 = time.perf_counter()
outs = gen.generate(prompts, n=4, temperature=1.0, max_tokens=64 if big else 8, seed=0)
if big:
    torch.cuda.synchronize()
g_tok, g_s = sum(c.num_tokens for o in outs for c in o), time.perf_counter() - t0
del gen
ex = [SFTExample(p, str(eval(p)) * 8) for p in prompts] * (4 if big else 1)
r = train_sft(w / "l", ex, w / "o", epochs=1.0, batch_size=64 if big else 8, learning_rate=1e-4, device=device)
busy = ""
if util.is_file():
    v = [float(x) for x in util.read_text().split() if x.strip().isdigit()]
    if v:
        busy = (f"; GPU busy during S5's round: {sum(x > 0 for x in v) / len(v):.0%} of {len(v)} samples, "
                f"mean utilisation {sum(v) / len(v):.0f}%")
print(f"{params / 1e6:.1f}M params on {device}: generation {g_tok / g_s:.0f} tokens/s ({g_tok} tokens), "
      f"SFT {r.num_tokens / r.seconds:.0f} tokens/s ({r.num_tokens} tokens, {r.num_steps} steps){busy}")
EOF
)
  if [ $? -eq 0 ]; then pass S10 "$out"; else fail S10 "$out"; fi
else skip S10 "only $(left) s left"; fi

say "== done in $(( BUDGET_S - $(left) )) s; $(grep -c '^PASS' "$SUMMARY") PASS, $(grep -c '^FAIL' "$SUMMARY") FAIL =="
grep -q '^FAIL' "$SUMMARY" && exit 1 || exit 0
