"""Replicas of an OpenAI-compatible server: placed, health-checked and stopped (never served by zpd itself).

    launcher = Launcher(cfg.served, run_dir, token="...", seed=0)
    replica = launcher.start(0, learner_dir)            # a child process tree, or a Ray job
    await launcher.wait_healthy(replica)                # GET <url><health_path> answers 200
    launcher.stop(replica)                              # TERM, wait, KILL the tree; GPU memory free

Local replicas lead their own session (so the whole tree can be killed) and get PR_SET_PDEATHSIG, so
a daemon killed even by SIGKILL takes them with it; they bind 127.0.0.1 on a port the OS picked. Ray
replicas are jobs through the Ray Jobs REST API; ``replica_entry.py`` picks the node's address and port
there and prints them into the job's log. Every replica started is recorded in ``run_dir/replicas.json``
(atomically) until it is stopped, so a restarted daemon sweeps what a killed one left (``sweep``): a
grandchild that escaped PDEATHSIG, or a Ray job that outlived its daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from zpd.store.atomic import atomic_write_json

from .process import die_with_parent as _die_with_parent
from .process import kill_tree
from .replica_entry import MARKER

if TYPE_CHECKING:  # only the type: a local pool never imports the Ray client
    from .verl.ray_jobs import RayJobs

REGISTRY = "replicas.json"
ENTRY_FILE = Path(__file__).with_name("replica_entry.py")
POLL_SECONDS = 0.25
LOG_TAIL_CHARS = 2000


class ReplicaFailed(RuntimeError):
    """A replica could not be started or did not become healthy in time."""


@dataclass
class Replica:
    slot: int
    argv: list[str]
    log_path: Path
    url: str | None = None
    """Base URL without /v1 (http://host:port); for a Ray replica known once its launcher printed it."""
    proc: subprocess.Popen | None = None
    job_id: str | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def base_url(self) -> str:
        """``url``, which a replica the router sends to always has (a Ray one once it printed it)."""
        if self.url is None:
            raise ReplicaFailed(f"replica {self.slot} has no address yet")
        return self.url

    def exited(self) -> bool:
        """True once a local replica's leader has exited (Ray replicas: see ``Launcher.job_ended``)."""
        return self.proc is not None and self.proc.poll() is not None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


class Launcher:
    """Starts and stops the replicas of one pool. Call from one thread (PDEATHSIG is per thread)."""

    def __init__(self, cfg: Any, run_dir: Path, *, token: str, seed: int) -> None:
        self.cfg, self.run_dir, self.token, self.seed = cfg, Path(run_dir), token, seed
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._live: dict[int, Replica] = {}
        self._jobs: RayJobs | None = None
        if cfg.placement == "ray":
            from .verl.ray_jobs import RayJobs

            self._jobs = RayJobs(cfg.ray_address)

    # -- the command -------------------------------------------------------------------------------
    def argv(self, slot: int, learner: Path, lora: bool, *, host: str, port: str) -> list[str]:
        python = self.cfg.ray_python if self.cfg.placement == "ray" else sys.executable
        line = self.cfg.command.format(learner=learner, port=port, host=host, model=self.cfg.model_name,
                                       python=python, slot=slot, seed=self.seed)
        return shlex.split(line) + (list(self.cfg.lora_args) if lora else [])

    def env(self, slot: int, lora: bool) -> dict[str, str]:
        env = dict(self.cfg.env)
        # The per-pool bearer token: zpd serve reads $ZPD_SERVE_TOKEN, vLLM $VLLM_API_KEY.
        env.update(ZPD_SERVE_TOKEN=self.token, VLLM_API_KEY=self.token, PYTHONUNBUFFERED="1")
        if lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        g = self.cfg.gpus_per_replica
        if g and self.cfg.placement == "local":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(slot * g, (slot + 1) * g))
        return env

    # -- start ---------------------------------------------------------------------------------------
    def start(self, slot: int, learner: Path, lora: bool = False) -> Replica:
        log_path = self.run_dir / f"replica-{slot}.log"
        if self._jobs is not None:
            return self._start_ray(self._jobs, slot, learner, lora, log_path)
        port = _free_port()
        argv = self.argv(slot, learner, lora, host="127.0.0.1", port=str(port))
        with open(log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(argv)}\n".encode())
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, **self.env(slot, lora)), start_new_session=True,
                                        preexec_fn=_die_with_parent)
            except OSError as exc:
                raise ReplicaFailed(f"replica {slot} could not be started ({argv[0]}): {exc}") from None
        replica = Replica(slot, argv, log_path, url=f"http://127.0.0.1:{port}", proc=proc)
        self._live[slot] = replica
        self._record()
        return replica

    def _start_ray(self, jobs: RayJobs, slot: int, learner: Path, lora: bool, log_path: Path) -> Replica:
        from .verl.ray_jobs import RayJobsError

        entry = Path(learner).parent / "replica_entry.py"  # beside the learner copy, on shared storage
        shutil.copyfile(ENTRY_FILE, entry)
        argv = self.argv(slot, learner, lora, host="{host}", port="{port}")
        toward = urlsplit(jobs.address).hostname or "127.0.0.1"
        entrypoint = shlex.join([self.cfg.ray_python, str(entry), "--toward", toward, "--", *argv])
        try:
            job_id = jobs.submit(entrypoint, env_vars=self.env(slot, lora),
                                 entrypoint_num_cpus=self.cfg.ray_num_cpus,
                                 entrypoint_num_gpus=self.cfg.ray_num_gpus or None)
        except RayJobsError as exc:
            raise ReplicaFailed(f"replica {slot}: Ray job submission failed: {exc}") from None
        replica = Replica(slot, argv, log_path, job_id=job_id)
        self._live[slot] = replica
        self._record()
        return replica

    # -- health --------------------------------------------------------------------------------------
    async def wait_healthy(self, replica: Replica) -> None:
        """Return once ``health_path`` answers 200; ReplicaFailed when the replica ends or the time is up."""
        deadline = replica.started_at + self.cfg.start_timeout_seconds
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(timeout=5.0, headers=headers) as client:
            while True:
                if replica.url is None and self._jobs is not None:
                    replica.url = await asyncio.to_thread(self._ray_url, replica)
                if self.ended(replica):
                    raise ReplicaFailed(f"replica {replica.slot} exited before it was healthy "
                                        f"({shlex.join(replica.argv)}); its log ends:\n"
                                        f"{self.log_tail(replica)}")
                if replica.url is not None:
                    try:
                        resp = await client.get(replica.url + self.cfg.health_path)
                        if resp.status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    raise ReplicaFailed(f"replica {replica.slot} did not answer GET {self.cfg.health_path} "
                                        f"within {self.cfg.start_timeout_seconds:g} s "
                                        f"({shlex.join(replica.argv)}); "
                                        f"its log ends:\n{self.log_tail(replica)}")
                await asyncio.sleep(POLL_SECONDS)

    def _ray_url(self, replica: Replica) -> str | None:
        for line in self.log_tail(replica, whole=True).splitlines():
            if line.startswith(MARKER):
                where = json.loads(line[len(MARKER):])
                return f"http://{where['host']}:{where['port']}"
        return None

    def ended(self, replica: Replica) -> bool:
        """Whether the replica's process (or Ray job) has ended."""
        if self._jobs is None:
            return replica.exited()
        from .verl.ray_jobs import TERMINAL, RayJobsError

        if replica.job_id is None:  # a Ray replica whose submission never returned an id: no job runs
            return True
        try:
            return self._jobs.status(replica.job_id) in TERMINAL
        except RayJobsError:
            return True

    def log_tail(self, replica: Replica, whole: bool = False) -> str:
        if self._jobs is not None:
            if replica.job_id is None:  # never submitted: no Ray log exists
                return ""
            try:
                text = self._jobs.logs(replica.job_id)
            except Exception:  # the cluster went away: the caller reports the replica as failed anyway
                return ""
            return text if whole else text[-LOG_TAIL_CHARS:]
        return _tail(replica.log_path)

    # -- stop ----------------------------------------------------------------------------------------
    def stop(self, replica: Replica) -> None:
        """Stop the replica and wait until it (and its GPU memory) is gone. Idempotent."""
        if self._jobs is not None and replica.job_id:
            from .verl.ray_jobs import stop_and_wait

            stop_and_wait(self._jobs, replica.job_id, self.cfg.stop_timeout_seconds)
        elif replica.proc is not None:
            pids = _tree_pids(replica.proc.pid)
            kill_tree(replica.proc.pid, grace_seconds=min(10.0, self.cfg.stop_timeout_seconds))
            replica.proc.wait()
            wait_gpu_released(pids, self.cfg.stop_timeout_seconds)
        if self._live.get(replica.slot) is replica:
            del self._live[replica.slot]
            self._record()

    def stop_all(self) -> None:
        for replica in list(self._live.values()):
            self.stop(replica)

    def _record(self) -> None:
        import psutil

        rows = []
        for r in self._live.values():
            row: dict[str, Any] = {"slot": r.slot, "pid": r.pid, "job_id": r.job_id, "url": r.url}
            if r.pid is not None:
                try:
                    row["create_time"] = psutil.Process(r.pid).create_time()
                except psutil.Error:
                    continue
            if r.job_id is not None:
                row["ray_address"] = self.cfg.ray_address
            rows.append(row)
        atomic_write_json(self.run_dir / REGISTRY, {"replicas": rows})


def _tree_pids(pid: int) -> list[int]:
    import psutil

    try:
        parent = psutil.Process(pid)
        return [pid] + [p.pid for p in parent.children(recursive=True)]
    except psutil.Error:
        return [pid]


def wait_gpu_released(pids: list[int], timeout_seconds: float) -> bool:
    """Wait until none of ``pids`` holds GPU memory (nvidia-smi's compute apps). Without nvidia-smi
    (a CPU node) the processes having exited is all there is to wait for. True when released."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return True
    deadline = time.monotonic() + timeout_seconds
    wanted = {str(p) for p in pids}
    while True:
        try:
            out = subprocess.run([smi, "--query-compute-apps=pid", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return True
        if not wanted & {line.strip() for line in out.splitlines()}:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _kill_group(pgid: int, not_before: float) -> list[str]:
    import psutil

    found = []
    for p in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["create_time"] >= not_before - 0.01:
                p.kill()
                found.append(f"pid {p.pid} (group {pgid})")
        except (OSError, psutil.Error):
            continue
    return found


def sweep(run_dir: Path) -> list[str]:
    """Stop whatever ``run_dir``'s registry says is still running (left by a daemon that was killed).
    A pid counts only if its start time matches the record (pids are reused). Returns what was stopped."""
    import psutil

    path = Path(run_dir) / REGISTRY
    try:
        rows = json.loads(path.read_text())["replicas"]
    except (OSError, ValueError, KeyError):
        return []
    stopped = []
    for row in rows:
        pid, job = row.get("pid"), row.get("job_id")
        if pid is not None:
            try:
                same = abs(psutil.Process(pid).create_time() - float(row.get("create_time", -1))) < 0.01
            except psutil.Error:
                same = False
            if same:
                kill_tree(pid)
                stopped.append(f"pid {pid}")
            else:  # the leader died with the daemon; its session may still hold grandchildren
                stopped += _kill_group(pid, float(row.get("create_time", 0.0)))
        if job is not None and row.get("ray_address"):
            from .verl.ray_jobs import RayJobs, stop_and_wait

            status = stop_and_wait(RayJobs(row["ray_address"]), job, 30.0)
            stopped.append(f"Ray job {job} ({status})")
    atomic_write_json(path, {"replicas": []})
    return stopped
