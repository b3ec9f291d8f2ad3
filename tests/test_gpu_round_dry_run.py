"""The GPU check's CPU dry run (``GPU_ROUND_DRYRUN=1 bash bench/gpu_round.sh run``): this environment's
packages, the learner on the CPU, the GPU-only steps skipped; the rest must PASS. It checks that the
script, its round config and zpd's verl overrides (against verl's own Hydra config) still fit the code,
so that the one GPU session that gets a machine does not spend it on a stale script. (A pytest test
rather than a step after the suite, so that xdist runs it beside the other modules.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from optional import require

ROOT = Path(__file__).resolve().parents[1]


require("verl", reason="the dry run checks zpd's overrides against verl's Hydra config")


def test_the_gpu_round_script_dry_runs_on_the_cpu(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, GPU_ROUND_DRYRUN="1", OUT=str(out), WORK=str(work), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_round.sh"), "run"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    done = re.search(r"== done in \d+ s; (\d+) PASS, (\d+) FAIL ==", text)
    assert done, text[-4000:]
    assert int(done.group(2)) == 0 and int(done.group(1)) >= 3, text[-4000:]
    assert not re.search(r"^FAIL ", text, re.M), text[-4000:]
