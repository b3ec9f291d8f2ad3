"""verl as a job on an existing Ray cluster, through the Ray Jobs REST API (stdlib HTTP only).

The daemon needs no Ray install to drive a cluster: it POSTs the entry point to
``<ray_address>/api/jobs/``, polls ``/api/jobs/<id>`` and ``/api/jobs/<id>/logs``, and POSTs
``/api/jobs/<id>/stop`` on stop, timeout or any error of its own (then waits for the job to end).
The job's runtime_env carries environment variables only: data, checkpoints and learners are paths
on ``storage.shared_dir``, never shipped with the job.
"""

from __future__ import annotations

import collections
import json
import shlex
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from zpd.trainer.process import TrainJobFailed, TrainJobStopped

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
LOG_TAIL_LINES = 60
STOP_WAIT_SECONDS = 30.0


class RayJobsError(RuntimeError):
    """The Jobs API did not answer, or answered with an error."""


class RayJobs:
    """A minimal client of the Ray Jobs REST API (the one ``ray job submit`` uses)."""

    def __init__(self, address: str, timeout_seconds: float = 10.0) -> None:
        self.address = address.rstrip("/")
        if "://" not in self.address:
            self.address = f"http://{self.address}"
        self.timeout_seconds = timeout_seconds

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.address}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_seconds) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[-500:]
            raise RayJobsError(f"Ray Jobs API {method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RayJobsError(f"Ray Jobs API at {self.address} does not answer: {exc}") from None
        return json.loads(text) if text.strip() else {}

    def version(self) -> dict:
        return self._call("GET", "/api/version")

    def submit(self, entrypoint: str, *, submission_id: str | None = None,
               env_vars: dict[str, str] | None = None, entrypoint_num_cpus: float | None = None,
               entrypoint_num_gpus: float | None = None) -> str:
        body: dict = {"entrypoint": entrypoint, "runtime_env": {"env_vars": dict(env_vars or {})},
                      "metadata": {"submitted_by": "zpd"}}
        if submission_id:
            body["submission_id"] = submission_id
        if entrypoint_num_cpus is not None:
            body["entrypoint_num_cpus"] = entrypoint_num_cpus
        if entrypoint_num_gpus is not None:
            body["entrypoint_num_gpus"] = entrypoint_num_gpus
        return str(self._call("POST", "/api/jobs/", body)["submission_id"])

    def status(self, job_id: str) -> str:
        return str(self._call("GET", f"/api/jobs/{job_id}")["status"])

    def info(self, job_id: str) -> dict:
        return self._call("GET", f"/api/jobs/{job_id}")

    def logs(self, job_id: str) -> str:
        return str(self._call("GET", f"/api/jobs/{job_id}/logs").get("logs", ""))

    def stop(self, job_id: str) -> bool:
        return bool(self._call("POST", f"/api/jobs/{job_id}/stop").get("stopped", False))


def stop_and_wait(client: RayJobs, job_id: str, wait_seconds: float = STOP_WAIT_SECONDS) -> str:
    """Ask the job to stop and wait until Ray reports it ended; returns its last status."""
    try:
        client.stop(job_id)
    except RayJobsError:
        pass
    deadline = time.monotonic() + wait_seconds
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        try:
            status = client.status(job_id)
        except RayJobsError:
            break
        if status in TERMINAL:
            break
        time.sleep(0.5)
    return status


def run_ray_job(argv: list[str], *, address: str, submission_id: str, env: dict[str, str], log_path: Path,
                timeout_seconds: float, poll_seconds: float, on_line: Callable[[str], None],
                should_stop: Callable[[], bool] | None, entrypoint_num_gpus: float | None = None) -> None:
    """Submit ``argv`` as a Ray job and follow it to the end (same contract as ``launch.run_local``)."""
    client = RayJobs(address)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    try:
        job_id = client.submit(shlex.join(argv), submission_id=submission_id, env_vars=env,
                               entrypoint_num_cpus=1, entrypoint_num_gpus=entrypoint_num_gpus)
    except RayJobsError as exc:
        raise TrainJobFailed(f"Ray job submission failed: {exc}") from None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    seen = 0
    deadline = time.monotonic() + timeout_seconds
    finished = False
    status = "PENDING"

    def drain() -> None:
        nonlocal seen
        text = client.logs(job_id)
        new, seen = text[seen:], len(text)
        if not new:
            return
        with open(log_path, "a") as log:
            log.write(new)
        for line in new.splitlines():
            tail.append(line)
            on_line(line)

    try:
        while True:
            try:
                status = client.status(job_id)
                drain()
            except RayJobsError as exc:
                raise TrainJobFailed(f"lost the Ray job {job_id}: {exc}", "\n".join(tail)) from None
            if status in TERMINAL:
                break
            if should_stop is not None and should_stop():
                raise TrainJobStopped(f"training stopped on request (Ray job {job_id})")
            if time.monotonic() > deadline:
                raise TrainJobFailed(f"Ray job {job_id} timed out after {timeout_seconds:g} s",
                                     "\n".join(tail))
            time.sleep(poll_seconds)
        finished = True
    finally:
        if not finished:
            stop_and_wait(client, job_id)
    if status != "SUCCEEDED":
        message = ""
        try:
            message = str(client.info(job_id).get("message") or "")
        except RayJobsError:
            pass
        raise TrainJobFailed(f"Ray job {job_id} ended {status}: {message} (log: {log_path})".strip(),
                             "\n".join(tail))
