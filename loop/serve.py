"""``zpd serve``: an OpenAI-compatible endpoint for a committed round's learner. Read-only.

    zpd serve --state-dir runs/demo                    # the current learner; follows the daemon
    zpd serve --state-dir runs/demo --round 3 --port 8000
    zpd serve --learner runs/demo/rounds/round_000003/learner --port 0    # any learner directory

Prints one JSON line ``{"url", "model", "round"}`` on stdout once it listens, then serves until
SIGINT/SIGTERM. Binds 127.0.0.1 by default; any other address needs a bearer token in ``$ZPD_SERVE_TOKEN``
(``--token-env``), which is then required on every request (it is also honoured on loopback when set).
Opens the store read-only and writes nothing, so it works beside a running daemon. ``--learner``
serves one learner directory as it is (no state directory needed): what the ``served`` generation
backend starts as its replicas. ``--enable-lora`` adds vLLM's runtime LoRA adapter routes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from zpd.store.db import StoreError, open_readonly
from zpd.store.ledger_rounds import current_learner_round
from zpd.store.rounds import COMPLETE, committed_on_disk, round_dir

DEFAULT_TOKEN_ENV = "ZPD_SERVE_TOKEN"


class ServeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _learner(state_dir: Path, n: int) -> Path:
    path = round_dir(state_dir, n) / "learner"
    if not (round_dir(state_dir, n) / COMPLETE).is_file() or not path.is_dir():
        raise ServeError(2, f"round {n} is not committed in {state_dir} (committed on disk: "
                            f"{committed_on_disk(state_dir) or 'none'})")
    return path


def current_round(state_dir: Path) -> int:
    """The round whose learner is current (the promotion gate may hold an earlier one than LATEST)."""
    try:
        db = open_readonly(state_dir / "state.db")
    except StoreError as exc:
        raise ServeError(2 if "no state database" in str(exc) else 4, str(exc)) from None
    try:
        current = current_learner_round(db)
    finally:
        db.conn.close()
    on_disk = committed_on_disk(state_dir)
    if current is not None and current in on_disk:
        return int(current)
    if on_disk:  # committed on disk, the store not yet told (the daemon reconciles at start)
        return max(on_disk)
    raise ServeError(2, f"{state_dir} has no committed round yet")


def serve(
    state_dir: Path | None,
    round_n: int | None,
    host: str,
    port: int,
    token_env: str = DEFAULT_TOKEN_ENV,
    device: str = "cpu",
    learner: Path | None = None,
    enable_lora: bool = False,
) -> int:
    from zpd.loop.metrics import is_loopback

    token = os.environ.get(token_env) or None
    if token is None and not is_loopback(host):
        raise ServeError(
            2, f"--host {host} is not a loopback address and requires a bearer token in ${token_env}"
        )
    if learner is not None:
        fixed_learner = Path(learner).resolve()
        if not (fixed_learner / "config.json").is_file():
            raise ServeError(2, f"--learner {learner}: not a model directory (no config.json)")

        def resolve() -> tuple[int, Path]:
            return -1, fixed_learner

        return _run(resolve, token, host, port, device, enable_lora, f"learner {fixed_learner}")
    if state_dir is None:
        raise ServeError(2, "give --state-dir or --learner")
    state_dir = Path(state_dir).resolve()
    if not state_dir.is_dir() or not (state_dir / "state.db").is_file():
        raise ServeError(2, f"{state_dir}: not a zpd state directory (no state.db)")
    if round_n is not None:
        fixed = _learner(state_dir, round_n)

        def resolve() -> tuple[int, Path]:
            return round_n, fixed
    else:
        _learner(state_dir, current_round(state_dir))

        def resolve() -> tuple[int, Path]:
            n = current_round(state_dir)
            return n, _learner(state_dir, n)

    follows = "" if round_n is not None else " (follows the current learner)"
    return _run(
        resolve, token, host, port, device, enable_lora, "round {round}" + follows, fixed=round_n is not None
    )


def _run(
    resolve: Callable[[], tuple[int, Path]],
    token: str | None,
    host: str,
    port: int,
    device: str,
    enable_lora: bool,
    what: str,
    fixed: bool = True,
) -> int:
    from zpd.trainer.device import resolve_device
    from zpd.trainer.openai_server import LearnerServer

    server = LearnerServer(
        resolve,
        token,
        device=resolve_device(device),
        refresh_seconds=1e18 if fixed else 2.0,
        enable_lora=enable_lora,
    )
    try:
        url = server.start(host, port)
    except OSError as exc:
        raise ServeError(1, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def stop(_sig: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    shown_round = None if server.round == -1 else server.round
    print(json.dumps({"url": url, "model": server.model_name, "round": shown_round}), flush=True)
    print(f"zpd serve: {what.format(round=server.round)} at {url}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0
