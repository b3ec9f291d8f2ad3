"""The AgentFrontier engine as a domain family: synthetic world, multi-hop questions, composite units.

This module registers the ``knowledge`` domain: ``domain.py``'s ``Knowledge`` (offline generator over
``world.py``), or ``teacher.py``'s ``TeacherKnowledge`` (teacher-written questions); ``operators.py``
holds the four escalation operators on that world; ``dedup.py`` the MiniLM near-duplicate filter that
SYNTHESIZE uses through ``remember``; ``units.py`` composite-unit mining, τ calibration and the greedy
near-duplicate index (numpy, pure); ``corpus_units.py`` the units of the ingested corpus, cached in the
store (``source = "corpus"``); ``llm.py`` the teacher-endpoint generator (prompts in files, JSON replies);
``retrieval.py`` dense search over the corpus chunks.
"""

from __future__ import annotations

from zpd.configs.schema import KnowledgeConfig

from ..base import register
from .domain import Knowledge
from .teacher import TeacherKnowledge


@register("knowledge")
def make_knowledge(cfg: KnowledgeConfig) -> Knowledge:
    """The knowledge domain of ``cfg``: teacher-written questions with ``generator = "teacher"``."""
    return TeacherKnowledge(cfg) if cfg.generator == "teacher" else Knowledge(cfg)
