"""The ``served`` generation backend: the current learner served by replicas, every round.

    gen = build_generator("served", model=learner_dir, settings=ServedSettings(cfg.served, run_dir))
    gen.generate(["57+68"], n=4, temperature=0.7, max_tokens=24, sample_seeds=[[11, 12, 13, 14]])
    gen.close()     # the replicas are stopped (process trees killed, GPU memory free) before TRAIN

Building the generator starts ``served.num_replicas`` servers on the learner (``replicas.py``: child
process trees or Ray jobs) and waits until each answers its health route. ``generate`` sends one
``/v1/chat/completions`` request per sample, each with its own seed, spread over the replicas with at
most ``max_concurrency_per_replica`` in flight on each. A sample whose replica died (connection lost,
process or job ended) goes back in the queue unchanged, seed included, so another replica draws the
same sample and decisions match a run without the fault; the dead replica is restarted
(``max_restarts``) or dropped. A 429/5xx from a live replica is retried (``max_retries``), anywhere.
When no replica is left, the samples still owed come back with finish_reason "error" (the phase then
fails as for any generator failure, and the daemon retries it with fresh replicas).

LoRA learners (a PEFT adapter directory whose ``base_model_name_or_path`` is a local model) are served
as the base plus the adapter, loaded with vLLM's runtime API (``POST /v1/load_lora_adapter`` with
``{"lora_name", "lora_path"}``, ``POST /v1/unload_lora_adapter`` with ``{"lora_name"}``; ``zpd serve
--enable-lora`` implements the same routes). With ``served.lora_reload`` the pool is parked at
``close`` instead of stopped, and the next learner over the same base loads its adapter into it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .completion import Completion
from .generation import Generator, backend
from .replicas import Launcher, Replica, ReplicaFailed, sweep

log = logging.getLogger("zpd.served")
_PARKED: dict[str, Pool] = {}


class NullObserver:
    """Where replica figures go when nobody exports them (the daemon passes its DaemonMetrics)."""

    def set_replicas(self, up: int, slots: int) -> None: ...

    def replica_in_flight(self, slot: int, delta: int) -> None: ...

    def replica_generated_tokens(self, slot: int, n: int) -> None: ...


@dataclass
class ServedSettings:
    served: Any
    """The ``[served]`` section (``configs/served.py``)."""
    run_dir: Path
    """Replica registry and logs (``<state_dir>/served``)."""
    shared_dir: Path | None = None
    """storage.shared_dir: where learners are copied for Ray replicas."""
    seed: int = 0
    observer: Any = None


def adapter_base(learner: Path) -> Path | None:
    """The base model directory of a LoRA learner (None: a plain model directory)."""
    cfg_path = Path(learner) / "adapter_config.json"
    if not cfg_path.is_file():
        return None
    base = json.loads(cfg_path.read_text()).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise ReplicaFailed(f"{cfg_path}: base_model_name_or_path {base!r} is not a local directory")
    return Path(base).resolve()


class Pool:
    """The replicas of one served model directory (a learner, or a LoRA base with an adapter loaded)."""

    def __init__(self, settings: ServedSettings, served_dir: Path, lora: bool) -> None:
        self.settings, self.cfg = settings, settings.served
        self.served_dir, self.lora = served_dir, lora
        self.token = secrets.token_urlsafe(24)
        self.launcher = Launcher(self.cfg, settings.run_dir, token=self.token, seed=settings.seed)
        self.observer = settings.observer or NullObserver()
        self.replicas: dict[int, Replica] = {}
        self.restarts: dict[int, int] = {}
        self.adapter: tuple[str, str] | None = None
        """(lora_name, lora_path) loaded on every replica."""

    @property
    def model(self) -> str:
        return self.adapter[0] if self.adapter else self.cfg.model_name

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        left = sweep(self.settings.run_dir)
        if left:
            log.warning("stopped replicas a previous daemon left running", extra={"stopped": left})
        began = time.monotonic()
        try:
            for slot in range(self.cfg.num_replicas):  # in this thread: PR_SET_PDEATHSIG follows the thread
                self.replicas[slot] = self.launcher.start(slot, self.served_dir, self.lora)
                self.restarts[slot] = 0
            asyncio.run(self._wait_all())
        except BaseException:
            self.stop()
            raise
        self.observer.set_replicas(len(self.replicas), self.cfg.num_replicas)
        log.info("replicas up", extra={"num_replicas": len(self.replicas), "served": str(self.served_dir),
                                       "urls": [r.url for r in self.replicas.values()],
                                       "pids": [r.pid for r in self.replicas.values()],
                                       "seconds": round(time.monotonic() - began, 2)})

    async def _wait_all(self) -> None:
        await asyncio.gather(*(self.launcher.wait_healthy(r) for r in self.replicas.values()))

    def stop(self) -> None:
        self.launcher.stop_all()
        self.replicas.clear()
        self.observer.set_replicas(0, self.cfg.num_replicas)

    # -- LoRA ------------------------------------------------------------------------------------
    async def _load(self, client: httpx.AsyncClient, replica: Replica, name: str, path: str) -> None:
        resp = await client.post(replica.base_url + "/v1/load_lora_adapter",
                                 json={"lora_name": name, "lora_path": path})
        if resp.status_code != 200:
            raise ReplicaFailed(f"replica {replica.slot} refused the adapter {path}: HTTP {resp.status_code} "
                                f"{resp.text[:300]!r} (vLLM needs --enable-lora and "
                                "VLLM_ALLOW_RUNTIME_LORA_UPDATING)")

    async def _unload(self, client: httpx.AsyncClient, replica: Replica, name: str) -> None:
        await client.post(replica.base_url + "/v1/unload_lora_adapter", json={"lora_name": name})

    def load_adapter(self, path: Path) -> None:
        """Load the adapter at ``path`` on every replica under a name of its own, then unload the old one."""
        name = "zpd-lora-" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        if self.adapter is not None and self.adapter[0] == name:
            return
        old = self.adapter

        async def run() -> None:
            async with httpx.AsyncClient(timeout=self.cfg.timeout_seconds, headers=self.headers) as client:
                await asyncio.gather(*(self._load(client, r, name, str(path))
                                       for r in self.replicas.values()))
                if old is not None:
                    await asyncio.gather(*(self._unload(client, r, old[0]) for r in self.replicas.values()))

        asyncio.run(run())
        self.adapter = (name, str(path))
        log.info("adapter loaded into the running replicas", extra={"adapter": str(path), "lora_name": name})


class ServedGenerator:
    """``Generator`` over replicas started on one learner. One ``generate`` at a time, from one thread."""

    def __init__(self, learner_dir: Path, settings: ServedSettings) -> None:
        self.settings, self.cfg = settings, settings.served
        learner = Path(learner_dir).resolve()
        base = adapter_base(learner)
        self._copies: list[Path] = []
        self.pool: Pool | None
        if base is None:
            self._key = None
            self.pool = Pool(settings, self._place(learner), lora=False)
            self.pool.start()
            return
        self._key = str(base)
        pool = _PARKED.pop(self._key, None) if self.cfg.lora_reload else None
        if pool is None:
            pool = Pool(settings, self._place(base), lora=True)
            pool.start()
        self.pool = pool
        try:
            pool.load_adapter(self._place(learner))
        except BaseException:
            pool.stop()
            raise

    def _place(self, path: Path) -> Path:
        """``path`` itself, or (Ray placement) its copy on storage.shared_dir, which every node sees."""
        if self.cfg.placement != "ray":
            return path
        shared = self.settings.shared_dir
        if shared is None:
            raise ReplicaFailed("served.placement = 'ray' needs storage.shared_dir "
                                "(a filesystem every node sees)")
        shared = Path(shared).resolve()
        if path.is_relative_to(shared):
            return path
        dest = shared / "served" / hashlib.sha256(str(path).encode()).hexdigest()[:12] / "learner"
        if not dest.is_dir():
            tmp = dest.with_name("learner.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(path, tmp)
            tmp.rename(dest)
        self._copies.append(dest.parent)
        return dest

    def generate(self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, max_tokens: int,
                 seed: int = 0, stop: list[str] | None = None,
                 sample_seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        if not prompts:
            return []
        if self.pool is None:
            raise RuntimeError("generate() on a closed ServedGenerator")
        pool = self.pool
        bodies = []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                body: dict[str, Any] = {
                    "model": pool.model, "messages": [{"role": "user", "content": prompt}],
                    "temperature": temperature, "max_tokens": max_tokens,
                    "seed": (seed + i * n + j if sample_seeds is None else sample_seeds[i][j]) % 2**63,
                }
                if stop:
                    body["stop"] = list(stop)
                bodies.append(body)
        flat = asyncio.run(Router(pool).run(bodies))
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def close(self) -> None:
        pool, self.pool = getattr(self, "pool", None), None
        if pool is None:
            return
        if self._key is not None and self.cfg.lora_reload and pool.replicas:
            previous = _PARKED.pop(self._key, None)
            if previous is not None and previous is not pool:
                previous.stop()
            _PARKED[self._key] = pool  # stays up through TRAIN; the next adapter loads into it
            return
        pool.stop()
        for copy in self._copies:
            shutil.rmtree(copy, ignore_errors=True)


def preflight(cfg: Any) -> None:
    """Before the first round: the replica program exists here (local) or the Ray cluster answers.
    Raises ReplicaFailed saying what is missing."""
    import shlex
    import sys

    if cfg.placement == "ray":
        from .verl.ray_jobs import RayJobs, RayJobsError

        try:
            RayJobs(cfg.ray_address).version()
        except RayJobsError as exc:
            raise ReplicaFailed(f"served.placement = 'ray': {exc}") from None
        return
    program = shlex.split(cfg.command.format(learner="L", port="0", host="127.0.0.1", model=cfg.model_name,
                                             python=sys.executable, slot=0, seed=0))[0]
    if shutil.which(program) is None:
        raise ReplicaFailed(f"served.command: {program!r} is not on PATH "
                            "(vLLM: pip install vllm on a GPU node; "
                            "on a CPU use \"{python} -m zpd.loop.cli serve --learner {learner} ...\")")


def stop_parked() -> None:
    """Stop the pools parked for a LoRA reload (the daemon calls this when it exits)."""
    while _PARKED:
        _PARKED.popitem()[1].stop()


from .served_router import Router  # noqa: E402  (the router reads Pool; it lives in its own module)


@backend("served")
def _served(*, model: Any, settings: Any, device: str, batch_size: int) -> Generator:
    return ServedGenerator(Path(model), settings)


__all__ = ["NullObserver", "Pool", "ServedGenerator", "ServedSettings", "stop_parked"]
