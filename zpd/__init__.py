"""zpd: a daemon that keeps training a language model inside its Zone of Proximal Development.

The import package is assembled from the repository's top-level folders (see pyproject.toml):
``zpd.loop`` (daemon, phases, CLI), ``zpd.trainer`` (everything that touches weights),
``zpd.store`` (every byte on disk) and ``zpd.configs`` (what an operator may set).
"""

__version__ = "0.1.0"
