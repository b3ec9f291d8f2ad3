"""Migration m007 (issue 15): what makes a round's queries independent of the store's history.

* indexes for the per-round reads: tasks by ``fate_round`` and by ``(domain, fate_round)``, training
  examples by ``(kind, round)``, exam items by admitted round;
* ``solo_totals``: per item, the learner's solo answers, kept on insert of attempts and measurements
  (``store/stats.py:solo_stats``), backfilled from the history once;
* ``fate_counts``: tasks per fate, kept by triggers on tasks (``zpd status``);
* ``bootstrap_examples``: the replayed bootstrap set, stored once per key (``store/training.py``);
* ``bandit_rewards``: a memo of the bandit policy's per-round rewards, cleared by triggers whenever a
  task it reads changes (``store/stats.py:bandit_rewards``).
"""

from __future__ import annotations

from .sqlite import Database


def create(db: Database) -> None:
    """Per-round cost independent of history (issue 15): indexes for the per-round queries, solo totals
    kept by triggers, the bootstrap set stored once, and a memo of the bandit's per-round rewards."""
    db.execute("CREATE INDEX tasks_fate_round ON tasks(fate_round)")  # round_yield, build_examples
    db.execute("CREATE INDEX tasks_domain_fate_round ON tasks(domain, fate_round)")  # bandit, per domain
    db.execute("CREATE INDEX train_examples_kind_round ON train_examples(kind, round)")  # the replay sample
    db.execute("CREATE INDEX exam_items_admitted ON exam_items(admitted_round, domain)")  # admissions
    # Per task: the learner's solo answers, correct and in all, from calibration (solo attempts of the
    # learner) and MEASURE (eval and exam answers). Attempts and measurements are only ever inserted (with
    # OR IGNORE: an ignored row is not counted), so the totals are exact.
    db.execute(
        """CREATE TABLE solo_totals (
            domain TEXT NOT NULL, content_hash TEXT NOT NULL,
            correct INTEGER NOT NULL, answers INTEGER NOT NULL,
            updated_round INTEGER NOT NULL,    -- the round of the newest answer counted (incremental reads)
            PRIMARY KEY (domain, content_hash)
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX solo_totals_updated ON solo_totals(domain, updated_round)")
    # Attempts come in batches through store/stats.py:insert_attempts, which adds a batch's solo answers in
    # one statement (a trigger per row halved the insert rate); measurements (a few hundred a round) by
    # trigger.
    for table, when in (("measurements", ""),):
        db.execute(
            f"""CREATE TRIGGER {table}_solo_totals AFTER INSERT ON {table} {when}BEGIN
                  INSERT INTO solo_totals (domain, content_hash, correct, answers, updated_round)
                  SELECT domain, content_hash, NEW.correct, 1, NEW.round FROM tasks WHERE id = NEW.task_id
                  ON CONFLICT (domain, content_hash) DO UPDATE
                  SET correct = correct + excluded.correct, answers = answers + 1,
                      updated_round = max(updated_round, excluded.updated_round);
                END"""
        )
    db.execute(
        """INSERT INTO solo_totals (domain, content_hash, correct, answers, updated_round)
           SELECT t.domain, t.content_hash, sum(x.correct), count(*), max(x.round) FROM (
               SELECT task_id, correct, round FROM attempts WHERE mode = 'solo' AND role = 'learner'
               UNION ALL SELECT task_id, correct, round FROM measurements) x
           JOIN tasks t ON t.id = x.task_id GROUP BY t.domain, t.content_hash"""
    )
    # Tasks per fate, for ``zpd status`` (a count over 1M tasks is not a status read).
    db.execute("CREATE TABLE fate_counts (fate TEXT PRIMARY KEY, num_tasks INTEGER NOT NULL) WITHOUT ROWID")
    count = (
        "INSERT INTO fate_counts (fate, num_tasks) VALUES ({r}.fate, {d}) "
        "ON CONFLICT (fate) DO UPDATE SET num_tasks = num_tasks + excluded.num_tasks;"
    )
    db.execute(
        f"CREATE TRIGGER tasks_fate_insert AFTER INSERT ON tasks BEGIN {count.format(r='NEW', d=1)} END"
    )
    db.execute(f"""CREATE TRIGGER tasks_fate_update AFTER UPDATE OF fate ON tasks
                   WHEN OLD.fate IS NOT NEW.fate
                   BEGIN {count.format(r="OLD", d=-1)} {count.format(r="NEW", d=1)} END""")
    db.execute(
        f"CREATE TRIGGER tasks_fate_delete AFTER DELETE ON tasks BEGIN {count.format(r='OLD', d=-1)} END"
    )
    db.execute("INSERT INTO fate_counts (fate, num_tasks) SELECT fate, count(*) FROM tasks GROUP BY fate")
    # The replayed bootstrap set (loop/train.py), made once per key (its config and seed), not each round.
    db.execute(
        """CREATE TABLE bootstrap_examples (
            idx INTEGER PRIMARY KEY, key TEXT NOT NULL,
            prompt TEXT NOT NULL, response TEXT NOT NULL, domain TEXT NOT NULL, answer TEXT NOT NULL
        )"""
    )
    # The bandit's mean absolute advantage per (domain, round, arm), as its query computes it from the
    # tasks (store/stats.py). A memo: every change to a task it reads deletes that round's entry.
    db.execute(
        """CREATE TABLE bandit_rewards (
            domain TEXT NOT NULL, fate_round INTEGER NOT NULL,
            rewards_json TEXT NOT NULL,        -- [[arm, reward], ...] by arm; [] for a round without any
            PRIMARY KEY (domain, fate_round)
        ) WITHOUT ROWID"""
    )
    # The bandit's values as of a round, per policy key (its initial value, step and arms): a later round
    # starts from them instead of replaying every round since round 1.
    db.execute(
        """CREATE TABLE bandit_values (
            domain TEXT NOT NULL, key TEXT NOT NULL,
            through_round INTEGER NOT NULL,    -- the values after rounds 1..through_round
            values_json TEXT NOT NULL,         -- {arm: Q}, in the policy's arm order
            PRIMARY KEY (domain, key)
        ) WITHOUT ROWID"""
    )
    forget = (
        "DELETE FROM bandit_rewards WHERE domain = {r}.domain AND fate_round = {r}.fate_round; "
        "DELETE FROM bandit_values WHERE domain = {r}.domain AND through_round >= {r}.fate_round;"
    )
    db.execute(f"""CREATE TRIGGER tasks_bandit_insert AFTER INSERT ON tasks WHEN NEW.fate_round IS NOT NULL
                   BEGIN {forget.format(r="NEW")} END""")
    db.execute(f"""CREATE TRIGGER tasks_bandit_update
                   AFTER UPDATE OF domain, difficulty, round, fate_round, p_solo ON tasks
                   WHEN OLD.fate_round IS NOT NULL OR NEW.fate_round IS NOT NULL
                   BEGIN {forget.format(r="OLD")} {forget.format(r="NEW")} END""")
    db.execute(f"""CREATE TRIGGER tasks_bandit_delete AFTER DELETE ON tasks WHEN OLD.fate_round IS NOT NULL
                   BEGIN {forget.format(r="OLD")} END""")
