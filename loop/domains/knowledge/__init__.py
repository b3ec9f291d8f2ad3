"""The AgentFrontier engine as a domain family: synthetic world, multi-hop questions, composite units.

``domain.py`` registers the ``knowledge`` domain (offline generator over ``world.py``); ``operators.py``
holds the four escalation operators on that world; ``dedup.py`` the MiniLM near-duplicate filter that
SYNTHESIZE uses through ``remember``; ``units.py`` composite-unit mining, τ calibration and the greedy
near-duplicate index (numpy, pure); ``corpus_units.py`` the units of the ingested corpus, cached in the store
(``source = "corpus"``); ``llm.py`` the teacher-endpoint generator (prompts in files, JSON replies).
"""

from . import domain  # noqa: F401  (registers "knowledge")
