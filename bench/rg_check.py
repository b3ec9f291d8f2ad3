"""The grading check and the offline-guidance check over every reasoning-gym family.

    python bench/rg_check.py                       # all families, both response formats
    python bench/rg_check.py --families chain_sum leg_counting --json out.json

For each family (``loop/domains/rg_grading.py:check_family``, 20 items over its levels): does the reference
answer score 1.0 while a garbage string and another item's answer score below the threshold; and
(``Family.offline_guidance_ratio``) what share of items get an offline guidance that does not contain the
answer. Families run one after another in a child process; one that takes longer than ``--timeout``
seconds is recorded as a timeout and the child is restarted on the rest. Prints one line per family and
a summary (enabled, left out by the check and why, with / without offline guidance).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# This file is named like the library: without this, ``import reasoning_gym`` would import it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _child(families: list[str], response: str, items: int) -> None:
    import os

    from zpd.configs.reasoning_gym import ReasoningGymConfig
    from zpd.loop.domains import rg_grading as g
    from zpd.loop.domains.reasoning_gym import Family, _seed

    # Results go to the real stdout; whatever a family prints goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    cfg = ReasoningGymConfig(enabled=True, families=["chain_sum"], response=response, check_items=items)
    for name in families:
        print(json.dumps({"start": name}), file=out, flush=True)
        t0 = time.monotonic()
        res = g.check_family(name, num_items=items, seed=_seed(cfg.eval_seed, "rg-check", name),
                             threshold=cfg.pass_threshold, range_mode=cfg.range_mode, max_level=None,
                             response=response)
        ratio = None
        if res.ok:
            try:
                with g.time_limit(60):
                    ratio = Family(name, cfg, res.levels, 100).offline_guidance_ratio()
            except Exception as exc:  # noqa: BLE001  (recorded, not fatal to the bench)
                ratio = f"{type(exc).__name__}"
        print(json.dumps({"family": name, "ok": res.ok, "reason": res.reason, "levels": len(res.levels),
                          "guidance_ratio": ratio, "seconds": round(time.monotonic() - t0, 2)}),
              file=out, flush=True)


def _failed(family: str, reason: str, seconds: float) -> dict:
    return {"family": family, "ok": False, "reason": reason, "levels": 0, "guidance_ratio": None,
            "seconds": seconds}


def run_all(families: list[str], response: str, items: int, timeout: float) -> list[dict]:
    """Check ``families`` in a child process, restarting it past a family that hangs or crashes it."""
    import selectors

    results: list[dict] = []
    todo = list(families)
    while todo:
        proc = subprocess.Popen([sys.executable, __file__, "--child", "--response", response,
                                 "--items", str(items), "--families", *todo],
                                stdout=subprocess.PIPE, text=True)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current, started = None, time.monotonic()
        while True:
            if not sel.select(timeout=1.0):
                if current is not None and time.monotonic() - started > timeout:
                    proc.kill()
                    proc.wait()
                    results.append(_failed(current, f"timeout ({timeout:g} s)", timeout))
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                if current is not None:
                    results.append(_failed(current, f"child exited {proc.returncode}", 0.0))
                break
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "start" in msg:
                current, started = msg["start"], time.monotonic()
                continue
            results.append(msg)
            current = None
            print(f"{msg['family']:28s} {'ok ' if msg['ok'] else 'OUT'} levels={msg['levels']:<3} "
                  f"guidance={msg['guidance_ratio']!s:6s} {msg['seconds']:6.1f}s {msg['reason']}", flush=True)
        sel.close()
        done = {r["family"] for r in results}
        todo = [f for f in todo if f not in done]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="*")
    ap.add_argument("--response", choices=["answer_tags", "worked"], default="answer_tags")
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.families, args.response, args.items)
        return
    from importlib.metadata import version

    from zpd.loop.domains.rg_grading import all_families

    families = args.families or all_families()
    t0 = time.monotonic()
    results = run_all(families, args.response, args.items, args.timeout)
    ok = [r for r in results if r["ok"]]
    guided = [r for r in ok if isinstance(r["guidance_ratio"], float) and r["guidance_ratio"] >= 0.5]
    print(f"\nreasoning-gym {version('reasoning-gym')}, response {args.response}: {len(results)} families "
          f"checked in {time.monotonic() - t0:.0f} s; {len(ok)} pass the grading check, "
          f"{len(results) - len(ok)} left out; "
          f"{len(guided)} of the passing have offline guidance (>= half the items)")
    if args.json:
        args.json.write_text(json.dumps({"version": version("reasoning-gym"), "response": args.response,
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
