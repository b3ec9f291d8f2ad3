"""Spreading one ``generate`` call's samples over a pool's replicas (``served.py``), and its faults.

One asyncio queue of sample indices; each live replica runs ``max_concurrency_per_replica`` workers
that take from it, so a fast replica takes more. A sample's request body (its seed included) never
changes, whichever replica answers it:

* answered (200): done; its tokens count for the replica;
* 429 / 5xx / unreadable body / timeout from a replica that is still alive: retried (``max_retries``),
  back in the queue for any replica, after a backoff;
* the connection lost and the replica ended or no longer healthy: the sample goes back in the queue
  as it was (not a retry: the replica owed it), the replica is restarted (``max_restarts`` per slot)
  or dropped;
* any other 4xx: our request is wrong; the sample fails at once.

When no replica is left and none is restarting, every sample still owed fails (finish_reason "error").
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from .completion import Completion
from .generation import error_completion
from .openai_backend import BadResponse, _parse
from .replicas import Replica, ReplicaFailed

log = logging.getLogger("zpd.served")
BACKOFF_SECONDS = 0.5


class Router:
    def __init__(self, pool: Any) -> None:
        self.pool, self.cfg = pool, pool.cfg
        self.observer = pool.observer

    async def run(self, bodies: list[dict]) -> list[Completion]:
        self.bodies = bodies
        self.results: list[Completion | None] = [None] * len(bodies)
        self.tries = [0] * len(bodies)
        self.began = [0.0] * len(bodies)
        self.owed = len(bodies)
        self.done = asyncio.Event()
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            self.queue.put_nowait(i)
        self.tasks: set[asyncio.Task] = set()
        self.restarting: set[int] = set()
        c = self.cfg.max_concurrency_per_replica
        limits = httpx.Limits(max_connections=c * max(1, self.cfg.num_replicas), max_keepalive_connections=c)
        async with httpx.AsyncClient(timeout=self.cfg.timeout_seconds, limits=limits,
                                     headers=self.pool.headers) as client:
            self.client = client
            for replica in list(self.pool.replicas.values()):
                self._spawn_workers(replica)
            for slot in range(self.cfg.num_replicas):  # a restart the previous call cut short
                if slot not in self.pool.replicas and self.pool.restarts.get(slot, 0) < self.cfg.max_restarts:
                    self.pool.restarts[slot] = self.pool.restarts.get(slot, 0) + 1
                    self.restarting.add(slot)
                    self._spawn(self._restart(slot, None))
            self._check_starved()
            try:
                await self.done.wait()
            finally:
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
        return [r for r in self.results if r is not None]

    # -- workers -------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _spawn_workers(self, replica: Replica) -> None:
        for _ in range(self.cfg.max_concurrency_per_replica):
            self._spawn(self._worker(replica))

    async def _worker(self, replica: Replica) -> None:
        while True:
            i = await self.queue.get()
            if self.pool.replicas.get(replica.slot) is not replica:
                self.queue.put_nowait(i)  # this replica is gone; another takes the sample
                return
            if not self.began[i]:
                self.began[i] = time.perf_counter()
            outcome = await self._post(replica, i)
            if outcome == "dead":
                self.queue.put_nowait(i)  # owed by the dead replica: the same body, the same seed
                await self._replica_down(replica)
                return

    async def _post(self, replica: Replica, i: int) -> str:
        self.observer.replica_in_flight(replica.slot, 1)
        error = ""
        try:
            resp = await self.client.post(replica.base_url + "/v1/chat/completions", json=self.bodies[i])
            if resp.status_code == 200:
                completion = _parse(resp, time.perf_counter() - self.began[i])
                self.observer.replica_generated_tokens(replica.slot, completion.num_tokens)
                self._finish(i, completion)
                return "ok"
            error = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
            if resp.status_code != 429 and resp.status_code < 500:
                self._finish(i, error_completion(error, time.perf_counter() - self.began[i]))
                return "rejected"
        except BadResponse as exc:
            error = f"malformed response: {exc}"
        except httpx.TimeoutException as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        except httpx.TransportError as exc:  # refused, reset, truncated: is the replica still there?
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
            if not await self._healthy(replica):
                return "dead"
        finally:
            self.observer.replica_in_flight(replica.slot, -1)
        self.tries[i] += 1
        if self.tries[i] > self.cfg.max_retries:
            self._finish(i, error_completion(f"{error} (after {self.cfg.max_retries} retries)",
                                             time.perf_counter() - self.began[i]))
        else:
            await asyncio.sleep(BACKOFF_SECONDS * 2 ** (self.tries[i] - 1))
            self.queue.put_nowait(i)
        return "retry"

    async def _healthy(self, replica: Replica) -> bool:
        if await asyncio.to_thread(self.pool.launcher.ended, replica):
            return False
        try:
            resp = await self.client.get(replica.url + self.cfg.health_path, timeout=5.0)
            return resp.status_code == 200
        except httpx.HTTPError:
            return False

    def _finish(self, i: int, completion: Completion) -> None:
        if self.results[i] is None:
            self.results[i] = completion
            self.owed -= 1
            if self.owed == 0:
                self.done.set()

    # -- replica faults ------------------------------------------------------------------------
    async def _replica_down(self, replica: Replica) -> None:
        if self.pool.replicas.get(replica.slot) is not replica:
            return  # another worker of this replica got here first
        del self.pool.replicas[replica.slot]
        self.observer.set_replicas(len(self.pool.replicas), self.cfg.num_replicas)
        slot = replica.slot
        restart = self.pool.restarts.get(slot, 0) < self.cfg.max_restarts
        log.warning("replica down", extra={  # its owed samples go to the others
            "slot": slot, "pid": replica.pid, "job_id": replica.job_id,
            "action": "restart" if restart else "drop",
            "log_tail": self.pool.launcher.log_tail(replica)[-500:]})
        if restart:
            self.pool.restarts[slot] = self.pool.restarts.get(slot, 0) + 1
            self.restarting.add(slot)
            self._spawn(self._restart(slot, replica))
        else:
            self.pool.launcher.stop(replica)
        self._check_starved()

    async def _restart(self, slot: int, old: Replica | None) -> None:
        try:
            if old is not None:
                self.pool.launcher.stop(old)
            new = self.pool.launcher.start(slot, self.pool.served_dir, self.pool.lora)
            try:
                await self.pool.launcher.wait_healthy(new)
                if self.pool.adapter is not None:
                    await self.pool._load(self.client, new, *self.pool.adapter)
            except BaseException:
                self.pool.launcher.stop(new)
                raise
        except asyncio.CancelledError:  # the call ended first: the next call restarts the slot afresh
            self.pool.restarts[slot] -= 1
            raise
        except ReplicaFailed as exc:
            log.error("replica restart failed; dropped", extra={"slot": slot, "error": str(exc)[-1000:]})
            self.restarting.discard(slot)
            self._check_starved()
            return
        self.restarting.discard(slot)
        self.pool.replicas[slot] = new
        self.observer.set_replicas(len(self.pool.replicas), self.cfg.num_replicas)
        log.info("replica restarted", extra={"slot": slot, "pid": new.pid, "url": new.url})
        self._spawn_workers(new)

    def _check_starved(self) -> None:
        if self.pool.replicas or self.restarting or self.done.is_set():
            return
        for i, r in enumerate(self.results):
            if r is None:
                self._finish(i, error_completion("no replica left (all died and their restarts are spent)"))
