"""``zpd report``: plots and tables of a real smoke run, through the real CLI; bad input refused cleanly."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from harness import SMOKE, ZPD, query, run_zpd, spawn_zpd, wait_for, zpd_env

from zpd.loop.report import (
    BAND_FATES,
    PLOTS,
    RunData,
    load_report,
    load_run,
    load_state_dir,
    render,
    round_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_pngs(out: Path) -> None:
    for name in PLOTS.values():
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name


def _table_rows(md: str) -> dict[int, list[str]]:
    """round -> cells of the per-round table (single run)."""
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def test_report_of_a_smoke_run_while_and_after_the_daemon_runs(tmp_path: Path, round0_archive: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "report"
    daemon = spawn_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "2",
                       "--from-snapshot", str(round0_archive), log=tmp_path / "daemon.log")
    try:
        wait_for(lambda: query(state, "SELECT 1 FROM rounds WHERE id = 1 AND status = 'committed'"), 300,
                 interval=0.2, what="round 1 committed")
        # Read-only: works while the daemon writes (it may or may not have finished round 2 by now).
        live = run_zpd("report", "--state-dir", str(state), "--out", str(out), timeout=120)
        assert live.returncode == 0, live.stderr
        _assert_pngs(out)
        assert daemon.wait(timeout=300) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    done = run_zpd("report", "--state-dir", str(state), "--out", str(out), timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["out"] == str(out.resolve())
    assert set(summary["files"]) == {*PLOTS.values(), "report.md", "report.json"}
    _assert_pngs(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind

    # report.md: a row per committed round, with the store's eval accuracy and fates.
    committed = query(state,
                      "SELECT id, eval_accuracy, exam_items FROM rounds WHERE status = 'committed' ORDER BY "
                      "id")
    assert [r[0] for r in committed] == [0, 1, 2]
    md = (out / "report.md").read_text()
    for name in PLOTS.values():
        assert f"]({name})" in md
    rows = _table_rows(md)
    assert sorted(rows) == [0, 1, 2]
    header = next(line for line in md.splitlines() if line.startswith("| round |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    for n, eval_acc, exam_items in committed:
        assert rows[n][cols.index("eval acc")] == f"{eval_acc:.4f}"
        assert rows[n][cols.index("exam items")] == str(exam_items)
    zpd_now = query(state, "SELECT count(*) FROM tasks WHERE fate_round = 2 AND fate = 'zpd'")[0][0]
    assert rows[2][cols.index("zpd")] == str(zpd_now)

    # report.json round-trips to what load_run reads from the store.
    data = json.loads((out / "report.json").read_text())
    assert data["plots"] == PLOTS and list(data["runs"]) == ["state"]
    runs = load_report(out / "report.json")
    fresh = load_state_dir(state)
    assert runs == {"state": [fresh]}
    assert [r.eval_accuracy for r in fresh.rounds] == [r[1] for r in committed]
    # Per domain: the test and validation parts as MEASURE stored them (the families plot's third panel).
    by_domain = query(state, "SELECT eval_by_domain_json, validation_by_domain_json FROM rounds "
                             "WHERE status = 'committed' ORDER BY id")
    assert [r.test_by_domain for r in fresh.rounds] == [json.loads(t) for t, _ in by_domain]
    assert [r.validation_by_domain for r in fresh.rounds] == [json.loads(v) for _, v in by_domain]
    assert set(fresh.rounds[2].test_by_domain) == {"arithmetic"}
    assert fresh.policy == "zpd-band" and fresh.domains == ["arithmetic"]
    tokens = [r[0] for r in query(state, "SELECT coalesce(train_tokens, 0) FROM rounds ORDER BY id")]
    assert [r.cumulative_train_tokens for r in fresh.rounds] == [sum(tokens[: i + 1]) for i in range(3)]
    assert all(set(r.bands) == set(BAND_FATES) for r in fresh.rounds)
    assert sum(fresh.rounds[1].bands.values()) > 0

    # The library layer: several runs and seeds overlaid (label -> list = mean with a min-max band).
    multi = tmp_path / "multi"
    paths = render({"seeds": [fresh, fresh], "one": fresh}, multi, "two settings")
    assert {p.name for p in paths} == {*PLOTS.values(), "report.md", "report.json"}
    _assert_pngs(multi)
    back = load_report(multi / "report.json")
    assert back == {"seeds": [fresh, fresh], "one": [fresh]}
    assert RunData.from_dict(fresh.to_dict()) == fresh
    _optional_columns(state, tmp_path)


def _optional_columns(state: Path, tmp_path: Path) -> None:
    """The curriculum columns (calibration cost, selection, decontamination) are read when the store has
    them and are None when it predates them."""
    copy = tmp_path / "copy.db"
    src = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    rcols = {r[1] for r in dst.execute("PRAGMA table_info(rounds)")}
    tcols = {r[1] for r in dst.execute("PRAGMA table_info(tasks)")}
    for col in ("num_attempts", "num_attempts_fixed", "decontamination_json"):
        if col in rcols:
            dst.execute(f"ALTER TABLE rounds DROP COLUMN {col}")
    if "selected" in tcols:
        dst.execute("ALTER TABLE tasks DROP COLUMN selected")
    dst.commit()
    old = load_run(dst)
    assert [r.eval_accuracy for r in old.rounds] == [r.eval_accuracy for r in load_state_dir(state).rounds]
    assert all(r.num_attempts is None and r.num_attempts_fixed is None and r.num_selected is None
               and r.decontamination is None for r in old.rounds)
    assert "attempts" not in round_table(old) and "decontamination" not in round_table(old)

    dst.execute("ALTER TABLE rounds ADD COLUMN num_attempts INTEGER")
    dst.execute("ALTER TABLE rounds ADD COLUMN num_attempts_fixed INTEGER")
    dst.execute("ALTER TABLE rounds ADD COLUMN decontamination_json TEXT")
    dst.execute("ALTER TABLE tasks ADD COLUMN selected INTEGER")
    dst.execute("""UPDATE rounds SET num_attempts = 40, num_attempts_fixed = 96,
                   decontamination_json = '{"checked": 24, "overlapping": 1}' WHERE id = 1""")
    dst.execute("UPDATE tasks SET selected = (fate = 'zpd') WHERE fate_round = 1")
    dst.commit()
    new = load_run(dst)
    dst.close()
    r1 = new.rounds[1]
    assert (r1.num_attempts, r1.num_attempts_fixed) == (40, 96)
    assert r1.decontamination == {"checked": 24, "overlapping": 1}
    assert r1.num_selected == r1.bands["zpd"]
    assert new.rounds[2].num_attempts is None and new.rounds[2].num_selected is None
    table = round_table(new)
    assert "attempts (fixed-k)" in table and "checked=24, overlapping=1" in table


def _report(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ZPD, "report", *args], capture_output=True, text=True, timeout=120,
                          env=env or zpd_env())


def test_report_bad_input_one_line_exit_2_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = _report(["--state-dir", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.returncode == 2 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1 and "no such state directory" in missing.stderr
    assert not out.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    not_ours = _report(["--state-dir", str(empty), "--out", str(out)])
    assert not_ours.returncode == 2 and len(not_ours.stderr.strip().splitlines()) == 1
    assert "no state.db" in not_ours.stderr and not out.exists()

    in_the_way = tmp_path / "file"
    in_the_way.write_text("x")
    clash = _report(["--state-dir", str(empty), "--out", str(in_the_way)])
    assert clash.returncode == 2 and len(clash.stderr.strip().splitlines()) == 1
    assert in_the_way.read_text() == "x"

    # Without matplotlib (a package that fails to import shadows it): the install hint, exit 2.
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    env = zpd_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(shadow.parent), env.get("PYTHONPATH", "")] if p)
    no_mpl = _report(["--state-dir", str(empty), "--out", str(out)], env=env)
    assert no_mpl.returncode == 2 and len(no_mpl.stderr.strip().splitlines()) == 1
    assert "pip install 'zpd[report]'" in no_mpl.stderr and not out.exists()
