"""Per-domain ZPD yield by round, read from the store (what the candidate allocation learns from)."""

from __future__ import annotations

from typing import Any

from zpd.configs import vocabulary

CALIBRATED_FATES = vocabulary.CALIBRATED_FATES


def domain_yields(db: Any, first_round: int, last_round: int) -> dict[int, dict[str, tuple[int, int]]]:
    """round -> domain -> (accepted, calibrated): tasks whose fate was decided in the round, and of them
    those in the band (``zpd``, plus ``exam``, which admits only in-band items), as ``rounds.yield_ratio``
    counts them for the whole round."""
    marks = ", ".join("?" * len(CALIBRATED_FATES))
    rows = db.execute(
        f"""SELECT fate_round, domain, coalesce(sum(fate IN ('zpd', 'exam')), 0), count(*) FROM tasks
            WHERE fate_round BETWEEN ? AND ? AND fate IN ({marks}) GROUP BY fate_round, domain
            ORDER BY fate_round, domain""", [first_round, last_round, *CALIBRATED_FATES]).fetchall()
    out: dict[int, dict[str, tuple[int, int]]] = {}
    for r, domain, accepted, calibrated in rows:
        out.setdefault(int(r), {})[domain] = (int(accepted), int(calibrated))
    return out
