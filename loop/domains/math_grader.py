"""Grading mathematical answers with HuggingFace ``math-verify``, under a hard time limit.

    grader = MathVerifyGrader(timeout_seconds=5.0)
    grader.grade("\\frac{1}{2}", "so the answer is $0.5$")   # -> Grade(correct=True, grader="math-verify")
    grader.close()

math-verify parses LaTeX / expressions with sympy, which is known to hang on some inputs, and its own
timeouts use SIGALRM (main thread only). So every check runs in a worker *process*; a check that
outlives ``timeout_seconds`` gets the worker killed (and a fresh one started on the next call), and
comes back as ``Grade(correct=False, error="timeout ...")``: not verified, and distinguishable from a
plain wrong answer (the caller counts it in ``zpd_failures_total{component="grader"}``).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

GRADER_NAME = "math-verify"


@dataclass(frozen=True, slots=True)
class Grade:
    correct: bool
    grader: str
    """Who graded: math-verify, exact, llm-judge:<model>... (stored with the answer)."""
    error: str | None = None
    """Why the grade could not be made (timeout, crash); ``correct`` is then False."""


def verify_answer(gold: str, answer: str) -> bool:
    """math-verify's check, in the worker (``parse`` both sides, gold first: ``verify`` is not symmetric)."""
    from math_verify import parse, verify

    return bool(verify(parse(gold), parse(answer)))


def _worker(conn: Any, target: str) -> None:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    while True:
        try:
            gold, answer = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(gold, answer)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class MathVerifyGrader:
    """Not thread-safe (one check at a time per grader)."""

    def __init__(self, timeout_seconds: float = 5.0, *, target: str = f"{__name__}:verify_answer") -> None:
        self.timeout_seconds, self.target = timeout_seconds, target
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self.num_timeouts = 0
        self.num_checks = 0
        """Checks answered by the current worker (0: the next one also waits for its start-up)."""

    def _start(self) -> Connection:
        ctx = mp.get_context("spawn")  # no fork of a process holding torch threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, self.target), name="zpd-math-verify",
                                 daemon=True)
        self._proc.start()
        child.close()
        return self._conn

    def grade(self, gold: str, answer: str) -> Grade:
        conn = self._conn
        if self._proc is None or not self._proc.is_alive() or conn is None:
            conn = self._start()
        conn.send((gold, answer))
        # The first call also pays the worker's start-up (sympy import): allow for it once.
        if not conn.poll(self.timeout_seconds + (10.0 if self.num_checks == 0 else 0.0)):
            self.num_timeouts += 1
            self.close()
            return Grade(False, GRADER_NAME, f"timeout after {self.timeout_seconds}s")
        self.num_checks += 1
        try:
            kind, value = conn.recv()
        except (EOFError, OSError):
            self.close()
            return Grade(False, GRADER_NAME, "math-verify worker died")
        if kind != "ok":
            return Grade(False, GRADER_NAME, value)
        return Grade(bool(value), GRADER_NAME)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.num_checks = 0
