"""The ``[served]`` section: the learner served by replicas of an OpenAI-compatible server, every round.

Used when ``generation.backend = "served"`` (``trainer/served.py``). Before CALIBRATE (and again for
MEASURE's new learner) zpd starts ``num_replicas`` servers on the learner from ``command``, waits for
each to answer ``health_path``, spreads the round's requests over them, and stops them (as process
trees, or Ray jobs) before TRAIN. This module imports nothing of zpd but ``base.Strict``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Strict

PLACEHOLDERS = ("learner", "port", "host", "model", "python", "slot", "seed")


class ServedConfig(Strict):
    num_replicas: int = Field(2, ge=1, le=256)
    """Servers started on the learner. Each is one engine (vLLM may spread one over several GPUs itself:
    put --tensor-parallel-size / --data-parallel-size in ``command``)."""

    command: str = ("vllm serve {learner} --host {host} --port {port} --served-model-name {model} "
                    "--seed {seed}")
    """Command template of one replica, split like a shell line (no shell runs it). Placeholders:
    {learner} the learner directory (the base model when the learner is a LoRA adapter), {port} a port
    the OS picked, {host} the bind address, {model} ``model_name``, {python} the daemon's interpreter,
    {slot} the replica's index, {seed} ``run.seed``. CPU example: "{python} -m zpd.loop.cli serve
    --learner {learner} --host {host} --port {port}"."""

    placement: Literal["local", "ray"] = "local"
    """local: child process trees on this node, bound to 127.0.0.1, killed with the daemon. ray: one
    Ray job per replica through the Ray Jobs API at ``ray_address`` (learners copied to
    storage.shared_dir, servers bound to the node's address and guarded by a per-run bearer token)."""

    ray_address: str = "http://127.0.0.1:8265"
    """Ray Jobs API address of the cluster's head (its dashboard), used when placement = "ray"."""

    ray_num_gpus: float = Field(1.0, ge=0, le=64)
    """GPUs Ray reserves for each replica job (entrypoint_num_gpus); 0 on a CPU cluster."""

    ray_num_cpus: float = Field(1.0, ge=0, le=1024)
    """CPUs Ray reserves for each replica job (entrypoint_num_cpus)."""

    ray_python: str = "python"
    """Interpreter on the cluster's nodes that runs the replica's launcher (stdlib only) and {python}."""

    model_name: str = "zpd-learner"
    """Name the servers serve the learner under (vLLM --served-model-name; ``zpd serve``'s fixed name)."""

    health_path: str = "/health"
    """Route that answers 200 once a replica can serve (vLLM and ``zpd serve``: /health)."""

    start_timeout_seconds: float = Field(900.0, gt=0, le=86400)
    """A replica that does not answer ``health_path`` within this time (from its start) fails the phase."""

    stop_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    """Grace for a replica tree to exit after SIGTERM (then SIGKILL), and for its GPU memory to be free."""

    max_concurrency_per_replica: int = Field(8, ge=1, le=4096)
    """Requests in flight at once on one replica (vLLM batches them; ``zpd serve`` runs them in turn)."""

    timeout_seconds: float = Field(120.0, gt=0, le=86400)
    """Per-request timeout (connect, read, write)."""

    max_retries: int = Field(3, ge=0, le=100)
    """Retries of one sample that a live replica answered with 429/5xx or an unreadable body (each may go
    to another replica). A dead replica's samples are re-queued without counting as retries."""

    max_restarts: int = Field(2, ge=0, le=100)
    """Restarts of each replica slot while one generator lives; after that a dead replica is dropped.
    When every replica is dropped, the remaining samples fail and the phase is retried."""

    lora_reload: bool = True
    """When the learner is a PEFT LoRA adapter (``adapter_config.json``) over the base the running
    replicas serve, load the new adapter with POST /v1/load_lora_adapter instead of restarting; the
    replicas then stay up through TRAIN (place them on other GPUs or nodes). False: always restart."""

    lora_args: list[str] = Field(default_factory=lambda: ["--enable-lora", "--max-lora-rank", "64"])
    """Appended to ``command`` when the learner is a LoRA adapter (vLLM's flags; ``zpd serve`` takes
    --enable-lora). The replicas also get VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."""

    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables of every replica (e.g. CUDA_VISIBLE_DEVICES is set per slot by vLLM's
    own data parallelism, not here). Never secrets: they are logged with the command."""

    gpus_per_replica: int = Field(0, ge=0, le=64)
    """Local placement: give replica i the GPUs [i*g, (i+1)*g) through CUDA_VISIBLE_DEVICES. 0: leave it."""

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        import string

        names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        unknown = names - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; known: {list(PLACEHOLDERS)}")
        if "port" not in names:
            raise ValueError("the command must take {port} (ports come from the OS)")
        return value

    @field_validator("health_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value
