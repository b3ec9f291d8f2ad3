"""The AgentFrontier engine as a domain family: synthetic world, multi-hop questions, composite units.

``domain.py`` registers the ``knowledge`` domain (offline generator over ``world.py``);
``units.py`` holds composite-unit mining, τ calibration and the near-duplicate filter (numpy, pure);
``llm.py`` is the teacher-endpoint generator (prompts in files, JSON replies).
"""

from . import domain  # noqa: F401  (registers "knowledge")
