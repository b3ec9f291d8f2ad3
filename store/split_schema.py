"""Migration m010 (issue 13): the frozen eval set's split into validation and test.

``eval_splits`` holds each eval task's split: ``validation`` (read by the promotion gate and the frontier
estimate) or ``test`` (read by reports only). ``rounds.validation_accuracy`` and
``validation_by_domain_json`` hold the validation part's figures; ``eval_accuracy`` and
``eval_by_domain_json`` become the test part's. A store made before this migration keeps its eval tasks:
MEASURE assigns their splits in its next round, by the same deterministic rule as a new run's round 0
(``loop/eval_split.py``), and its gate pairs the new answers with the parent round's stored ones.
"""

from __future__ import annotations

from .sqlite import Database


def create(db: Database) -> None:
    db.execute(
        """CREATE TABLE eval_splits (
            task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
            split TEXT NOT NULL CHECK (split IN ('validation', 'test'))
        )"""
    )
    db.execute("ALTER TABLE rounds ADD COLUMN validation_accuracy REAL")
    db.execute("ALTER TABLE rounds ADD COLUMN validation_by_domain_json TEXT")
