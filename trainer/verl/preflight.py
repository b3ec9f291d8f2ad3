"""Checks run before the first round when a verl backend is configured: fail fast, say what to do.

Local placement: the interpreter that will run verl can import it (with the ``verl-core`` extra the
trainers need) and sees a CUDA GPU. Ray placement: ``storage.shared_dir`` is set, the Jobs API
answers, and a probe job on the cluster can import verl and sees the GPUs the config asks for.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

from zpd.configs.schema import ZpdConfig

INSTALL_HINT = "pip install 'zpd[verl]' (verl[verl-core]==0.9.1) or run on a GPU node with verl installed"
PROBE_TIMEOUT_SECONDS = 120.0

# Printed as one JSON line; imports torch only (verl itself takes ~6 s to import, find_spec is enough).
PROBE = r"""
import importlib.util as u, json
need = {"verl": "verl", "uvicorn": "uvicorn", "transfer_queue": "transfer_queue"}
missing = [name for name, mod in need.items() if u.find_spec(mod) is None]
gpus = 0
try:
    import torch
    gpus = torch.cuda.device_count()
except Exception:
    pass
if __import__("sys").argv[1:] == ["ray"]:  # inside a Ray job: count the cluster's GPUs
    import ray
    ray.init()
    gpus = int(ray.cluster_resources().get("GPU", 0))
print("ZPD_PROBE " + json.dumps({"missing": missing, "gpus": gpus}))
"""


class VerlUnavailable(RuntimeError):
    """verl cannot run as configured; the message (one line) says what to install or where to run."""


def _parse_probe(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("ZPD_PROBE "):
            return json.loads(line[len("ZPD_PROBE "):])
    return None


def _missing_message(missing: list[str], where: str) -> str:
    if "verl" in missing:
        return f"verl is not importable {where}: {INSTALL_HINT}"
    return (f"verl is installed {where} but its trainers lack {', '.join(missing)} (the verl-core extra): "
            f"{INSTALL_HINT}")


def preflight_local(cfg: ZpdConfig) -> None:
    python = cfg.verl.python or sys.executable
    where = f"by {python}"
    if cfg.verl.nnodes > 1:
        raise VerlUnavailable(f"verl.nnodes = {cfg.verl.nnodes} needs several machines: set "
                              "verl.placement = \"ray\" and verl.ray_address to a Ray cluster's Jobs API")
    try:
        proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VerlUnavailable(f"verl.python = {python!r} cannot be run ({exc}): {INSTALL_HINT}") from None
    found = _parse_probe(proc.stdout)
    if found is None:
        raise VerlUnavailable(f"the verl check failed {where}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    if found["missing"]:
        raise VerlUnavailable(_missing_message(found["missing"], where))
    if found["gpus"] < cfg.verl.n_gpus_per_node:
        raise VerlUnavailable(
            f"train.backend = {cfg.train.backend!r} with verl.placement = \"local\" needs "
            f"{cfg.verl.n_gpus_per_node} CUDA GPU(s) and this machine has {found['gpus']} (verl's trainers "
            "do not run on CPU): run zpd on a GPU node, or set verl.placement = \"ray\" with "
            "verl.ray_address of a GPU cluster")


def preflight_ray(cfg: ZpdConfig) -> None:
    from .ray_jobs import TERMINAL, RayJobs, RayJobsError, stop_and_wait

    v = cfg.verl
    if cfg.storage.shared_dir is None:
        raise VerlUnavailable("verl.placement = \"ray\" needs storage.shared_dir: a directory every Ray node "
                              "sees, for training data, checkpoints and new learners")
    client = RayJobs(v.ray_address)
    try:
        client.version()
        job = client.submit(f"{shlex.quote(v.python or 'python')} -c {shlex.quote(PROBE)} ray",
                            entrypoint_num_cpus=0)
    except RayJobsError as exc:
        raise VerlUnavailable(f"no Ray cluster answers at verl.ray_address = {v.ray_address!r} ({exc}); "
                              "start one (ray start --head) or fix the address") from None
    deadline = time.monotonic() + PROBE_TIMEOUT_SECONDS
    status = "PENDING"
    try:
        while status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            status = client.status(job)
        logs = client.logs(job)
    except RayJobsError as exc:
        raise VerlUnavailable(f"the Ray cluster at {v.ray_address!r} stopped answering: {exc}") from None
    finally:
        if status not in TERMINAL:
            stop_and_wait(client, job)
    found = _parse_probe(logs)
    if found is None:
        raise VerlUnavailable(f"the probe job on the Ray cluster at {v.ray_address!r} ended {status}: "
                              f"{logs.strip()[-300:]}")
    if found["missing"]:
        raise VerlUnavailable(_missing_message(found["missing"], f"on the Ray cluster at {v.ray_address!r}"))
    want = v.nnodes * v.n_gpus_per_node
    if found["gpus"] < want:
        raise VerlUnavailable(f"the Ray cluster at {v.ray_address!r} offers {found['gpus']} GPU(s) and the "
                              f"config asks for {want} (verl.nnodes * verl.n_gpus_per_node): add GPU nodes "
                              "or lower them")


def preflight(cfg: ZpdConfig) -> None:
    """Raise VerlUnavailable (one actionable line) unless verl can run as ``cfg`` asks."""
    if cfg.verl.placement == "ray":
        preflight_ray(cfg)
    else:
        preflight_local(cfg)
