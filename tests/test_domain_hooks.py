"""The domain plug-in interface (loop/domains/base.py): declared hooks, and domains as pure logic.

A domain with only the required methods goes through every phase's hook call (each optional hook is a
capability the phase skips when it is absent); one that implements a hook, without naming its protocol,
is called through it; and nothing under loop/domains imports any of zpd but configs and itself.
"""

from __future__ import annotations

import ast
import logging
import random
from pathlib import Path
from types import SimpleNamespace

from harness import ROOT

from zpd.configs.schema import KnowledgeConfig, ZpdConfig
from zpd.loop import integrity, pretrain, selfplay, synthesize
from zpd.loop.bootstrap import bootstrap_set, make_eval_sets
from zpd.loop.context import RunContext
from zpd.loop.domains.arithmetic import Arithmetic
from zpd.loop.domains.base import (
    Attaches,
    EstimatesDifficulty,
    FlagsNearDuplicates,
    HasCorpus,
    InstructFormat,
    NamesGrader,
    Observes,
    OwnBootstrap,
    OwnEvalSet,
    Parses,
    Remembers,
    Scores,
    Task,
    capability,
)
from zpd.loop.domains.knowledge.domain import Knowledge
from zpd.loop.domains.knowledge.teacher import TeacherKnowledge
from zpd.loop.domains.prompting import Styled
from zpd.store.db import open_store

CAPABILITIES = [Attaches, OwnEvalSet, OwnBootstrap, Observes, EstimatesDifficulty, Remembers,
                FlagsNearDuplicates, Parses, HasCorpus, NamesGrader, Scores, InstructFormat]


class Minimal:
    """Only the required part of ``Domain``: echo a number of ``difficulty`` digits."""

    name = "minimal"
    min_difficulty = 1.0
    max_difficulty = 3.0

    def __init__(self) -> None:
        self.cfg = SimpleNamespace(eval_per_level=2)

    def make_task(self, difficulty: float, rng: random.Random) -> Task:
        digits = int(min(self.max_difficulty, max(self.min_difficulty, round(difficulty))))
        n = rng.randrange(10 ** (digits - 1), 10**digits)
        return Task(domain=self.name, difficulty=float(digits), prompt=f"echo {n}", answer=str(n),
                    guidance=f"say {n}", canonical=str(n))

    def escalate(self, task: Task, rng: random.Random) -> Task:
        return self.make_task(task.difficulty + 1, rng)

    def simplify(self, task: Task, rng: random.Random) -> Task:
        return self.make_task(task.difficulty - 1, rng)

    def guided_prompt(self, task: Task) -> str:
        return f"{task.prompt}|{task.guidance}"

    def solution(self, task: Task) -> str:
        return task.answer

    def grade(self, task: Task, output: str) -> bool:
        return output.strip() == task.answer

    def eval_levels(self) -> list[float]:
        return [1.0, 2.0, 3.0]


class Observing(Minimal):
    """Minimal plus two hooks, written without naming their protocols (structural: still detected)."""

    def __init__(self) -> None:
        super().__init__()
        self.used: set[str] | None = None

    def observe(self, stats: object, used: set[str]) -> None:
        self.used = set(used)

    def estimated_difficulty(self, content_hash: str) -> float | None:
        return 9.0


def _ctx(tmp_path: Path, domain: object) -> RunContext:
    cfg = ZpdConfig()
    return RunContext(tmp_path, cfg, open_store(tmp_path / "state.db"), {"minimal": domain},
                      None, logging.getLogger("test"))


def test_a_minimal_domain_goes_through_every_phase_hook_call(tmp_path: Path) -> None:
    domain = Styled(Minimal(), "bare")
    assert [c.__name__ for c in CAPABILITIES if capability(domain, c) is not None] == []
    ctx = _ctx(tmp_path, domain)
    with ctx.db.atomic():
        # The eval set: no eval_items, so made by level (eval_per_level of each of eval_levels).
        assert make_eval_sets(ctx) == {"minimal": 6}
        synthesize.observe(ctx, "minimal", domain)  # no observe: nothing read, nothing re-rated
        synthesize.remember(ctx, "minimal", domain)
    evals = ctx.db.execute("SELECT prompt, difficulty FROM tasks WHERE fate = 'eval' ORDER BY id").fetchall()
    assert sorted(d for _p, d in evals) == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    # The warm-up set: no bootstrap_task, so make_task at the configured levels, answered correctly.
    rows = bootstrap_set(ctx.domains, ctx.cfg.bootstrap, seed=1, exclude=set())
    assert len(rows) == ctx.cfg.bootstrap.num_examples and all(r["domain"] == "minimal" for r in rows)
    assert all(r["response"] == r["answer"] and r["prompt"].startswith("echo ") for r in rows)
    assert selfplay.proposer_examples(ctx.domains, 5, seed=0, exclude=set()) == []  # no parse: no proposer
    # The overlap check: an eval prompt in the training set is dropped as exact; near_duplicates absent.
    data = [{"prompt": evals[0][0], "domain": "minimal"}, {"prompt": "echo 123456", "domain": "minimal"}]
    clean, report = integrity.check(ctx.db, 0, data, ctx.domains)
    assert clean == data[1:] and report["dropped"] == 1
    assert pretrain.pretrain_texts(ctx, 1) == []  # no corpus_texts and no ingested chunks


def test_a_hook_a_domain_implements_is_called_without_naming_its_protocol(tmp_path: Path) -> None:
    inner = Observing()
    domain = Styled(inner, "instruct")
    assert capability(domain, Observes) is inner and capability(domain, EstimatesDifficulty) is inner
    ctx = _ctx(tmp_path, domain)
    with ctx.db.atomic():
        make_eval_sets(ctx)
        synthesize.observe(ctx, "minimal", domain)
    hashes = {h for (h,) in ctx.db.execute("SELECT content_hash FROM tasks WHERE domain = 'minimal'")}
    assert inner.used == hashes and len(hashes) == 6
    assert {d for (d,) in ctx.db.execute("SELECT difficulty FROM tasks WHERE fate = 'eval'")} == {9.0}


def test_the_built_in_domains_declare_the_hooks_they_have() -> None:
    arithmetic = Arithmetic(ZpdConfig().domains.arithmetic)
    assert {c.__name__ for c in CAPABILITIES if capability(arithmetic, c)} == {"Parses", "InstructFormat"}
    synthetic = Knowledge(KnowledgeConfig(enabled=True))
    assert {c.__name__ for c in CAPABILITIES if capability(synthetic, c)} == {"Attaches", "Remembers",
                                                                               "HasCorpus"}
    teacher = TeacherKnowledge(KnowledgeConfig(enabled=True, generator="teacher"))
    assert {c.__name__ for c in CAPABILITIES if capability(teacher, c)} == {
        "Attaches", "Remembers", "HasCorpus", "OwnEvalSet", "OwnBootstrap"}


def _zpd_imports(path: Path, package: str) -> list[str]:
    """Every module of zpd ``path`` imports, at any depth (function-level imports count), made absolute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.append(node.module)
    return [m for m in found if m == "zpd" or m.startswith("zpd.")]


def test_loop_domains_import_nothing_of_zpd_but_configs_and_themselves() -> None:
    root = ROOT / "loop" / "domains"
    files = sorted(root.rglob("*.py"))
    assert len(files) > 10
    wrong = {}
    for path in files:
        rel = path.relative_to(root).with_suffix("")
        parts = ["zpd", "loop", "domains", *rel.parts]
        package = ".".join(parts if rel.name == "__init__" else parts[:-1]).removesuffix(".__init__")
        bad = [m for m in _zpd_imports(path, package)
               if not m.startswith(("zpd.configs", "zpd.loop.domains"))]
        if bad:
            wrong[str(path.relative_to(ROOT))] = bad
    assert wrong == {}
