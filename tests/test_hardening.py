"""Issue 14's defects, one test each (each failed before the fix): state directories that are not one,
stale seeding stages, refusals that left traces, bool-as-int configs, BrokenPipe, FIFOs, crash reports,
names with newlines, dataset mappings, corpus symlinks and streaming, serve's body and work limits."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from attack_lib import cli, tree_digest
from harness import SMOKE, ZPD, zpd_env


@pytest.fixture(scope="module")
def run_dir(round0_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("hard") / "run"
    code, err = cli("start", "--config", SMOKE, "--state-dir", state, "--rounds", "0", "--from-snapshot",
                    round0_archive)
    assert code == 0, err
    return state


@pytest.mark.parametrize("where", ["rounds/round_000000", "rounds", "rounds/new", "logs"])
def test_a_directory_inside_a_run_is_refused_without_a_byte_written(run_dir: Path, where: str) -> None:
    before = tree_digest(run_dir)
    code, err = cli("start", "--config", SMOKE, "--state-dir", run_dir / where, "--rounds", "1")
    assert code == 4 and len(err.strip().splitlines()) == 1, err
    assert tree_digest(run_dir) == before


def test_a_stopped_daemon_leaves_no_log_handler_on_its_run(run_dir: Path) -> None:
    """A record logged in the same process after ``zpd start`` returned (the fixture ran it in-process)
    must not reach that run's ``logs/zpd.jsonl``: CI once saw the file change under a later refusal."""
    before = tree_digest(run_dir)
    logging.getLogger("zpd").warning("after the daemon stopped")
    logging.getLogger("py.warnings").warning("a late warning")
    assert tree_digest(run_dir) == before


def test_rollback_and_review_refuse_a_committed_round_directory(run_dir: Path, tmp_path: Path) -> None:
    before = tree_digest(run_dir)
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text("")
    for args in (["rollback", "--round", "0"], ["review", "--import", verdicts]):
        code, err = cli(args[0], "--state-dir", run_dir / "rounds" / "round_000000", *args[1:])
        assert code == 4 and len(err.strip().splitlines()) == 1, err
    assert tree_digest(run_dir) == before


def test_a_foreign_directory_with_a_state_db_is_refused_and_gets_no_lock(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"not sqlite at all" * 100)
    before = tree_digest(tmp_path)
    code, err = cli("start", "--config", SMOKE, "--state-dir", tmp_path, "--rounds", "0")
    assert code == 4 and len(err.strip().splitlines()) == 1, err
    assert tree_digest(tmp_path) == before and not (tmp_path / "controller.lock").exists()


def test_a_stale_seed_stage_of_a_dead_pid_is_recovered(round0_archive: Path, tmp_path: Path) -> None:
    stage = tmp_path / "s" / ".seed-999999999.tmp" / "round_000000"
    stage.mkdir(parents=True)
    (stage / "half").write_bytes(b"x" * 100)
    code, err = cli("start", "--config", SMOKE, "--state-dir", tmp_path / "s", "--rounds", "0",
                    "--from-snapshot", round0_archive)
    assert code == 0, err
    assert not list((tmp_path / "s").glob(".seed-*")) and (tmp_path / "s" / "LATEST").is_file()
    # Killed between publishing the round directory and the store: its rounds/ is the seeding's own.
    half = tmp_path / "h"
    (half / ".seed-999999998.tmp").mkdir(parents=True)
    (half / "rounds" / "round_000000").mkdir(parents=True)
    code, err = cli("start", "--config", SMOKE, "--state-dir", half, "--rounds", "0", "--from-snapshot",
                    round0_archive)
    assert code == 0, err
    assert (half / "state.db").is_file() and (half / "rounds" / "round_000000" / "COMPLETE").is_file()


def test_a_seeding_killed_before_latest_is_repaired_by_the_next_start(round0_archive: Path,
                                                                     tmp_path: Path) -> None:
    # The last instant of a seeding: the round and the store are published, LATEST is not yet written.
    state = tmp_path / "s"
    code, err = cli("start", "--config", SMOKE, "--state-dir", state, "--rounds", "0", "--from-snapshot",
                    round0_archive)
    assert code == 0, err
    (state / "LATEST").unlink()
    code, err = cli("start", "--config", SMOKE, "--state-dir", state, "--rounds", "0")
    assert code == 0, err
    assert (state / "LATEST").read_text() == "0\n"


def test_a_late_refusal_leaves_nothing_and_the_corrected_retry_starts(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    state = tmp_path / "new" / "state"
    code, err = cli("start", "--config", SMOKE, "--state-dir", state, "--rounds", "0", "--set",
                    f"metrics.port={port}")
    assert code == 1 and "metrics.port" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists(), "the busy port must be found before the first write"
    code, err = cli("start", "--config", SMOKE, "--state-dir", state, "--rounds", "0",
                    "--set", "metrics.host='0.0.0.0'")
    assert code == 2 and "metrics.host" in err and not (tmp_path / "new").exists()
    busy.close()
    # An existing (zpd) directory keeps its own lock file untouched on a refusal.
    state.mkdir(parents=True)
    (state / "controller.lock").write_text("{}")
    code, err = cli("start", "--config", SMOKE, "--state-dir", state, "--rounds", "0", "--set",
                    "metrics.host='0.0.0.0'")
    assert code == 2 and sorted(p.name for p in state.iterdir()) == ["controller.lock"]


def test_bool_is_not_an_int_and_huge_or_deep_values_are_one_line(tmp_path: Path) -> None:
    for value in ["calibration.num_solo=true", "run.seed=" + "9" * 4400,
                  "run.seed=" + "[" * 5000 + "]" * 5000]:
        code, err = cli("start", "--config", SMOKE, "--state-dir", tmp_path / "s", "--set", value)
        assert code == 2 and len(err.strip().splitlines()) == 1, (value[:40], err)
    assert not (tmp_path / "s").exists()
    code, err = cli("start", "--config", SMOKE, "--state-dir", tmp_path / "s", "--set",
                    "calibration.num_solo=true")
    assert "calibration.num_solo" in err


def test_status_into_a_closed_pipe_exits_quietly(run_dir: Path) -> None:
    out = subprocess.run(f"{sys.executable} -m zpd.loop.cli status --state-dir '{run_dir}' --json "
                         "| head -c 1",
                         shell=True, capture_output=True, text=True, env=zpd_env(), timeout=60)
    assert out.stdout == "{" and "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_a_fifo_as_snapshot_or_dataset_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    code, err = cli("start", "--config", SMOKE, "--state-dir", tmp_path / "s", "--from-snapshot", fifo)
    assert code == 2 and "not a regular file" in err
    code, err = cli("start", "--config", SMOKE.parent / "dataset.toml", "--state-dir", tmp_path / "s",
                    "--set", f"domains.dataset.path='{fifo}'")
    assert code == 2 and "not a regular file" in err and not (tmp_path / "s").exists()


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path: Path) -> None:
    code, err = cli("start", "--config", tmp_path / "a\nb.toml", "--state-dir", tmp_path / "s")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "a\\nb.toml" in err


def test_an_unexpected_error_is_one_line_naming_its_traceback_file(run_dir: Path, tmp_path: Path) -> None:
    env = dict(zpd_env(), XDG_STATE_HOME=str(tmp_path / "xdg"))
    before = tree_digest(run_dir)
    # A read-only command crashing (a monkeypatched bug in a child process): the traceback goes to XDG, not
    # DIR.
    code = ("import sys, zpd.loop.status as s\n"
            "s.collect = lambda d: 1 / 0\n"
            "from zpd.loop.cli import main\n"
            f"sys.exit(main(['status', '--state-dir', {str(run_dir)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "ZeroDivisionError" in lines[0], out.stderr
    saved = list((tmp_path / "xdg" / "zpd").glob("crash-status-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in lines[0] and "Traceback" in saved[0].read_text()
    assert tree_digest(run_dir) == before
    # A writing command's traceback goes to DIR/logs/.
    code = ("import sys, zpd.loop.rollback as r\n"
            "r.rollback = lambda d, n: 1 / 0\n"
            "from zpd.loop.cli import main\n"
            f"sys.exit(main(['rollback', '--state-dir', {str(run_dir)!r}, '--round', '0']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and str(run_dir / "logs") in out.stderr, out.stderr
    for p in (run_dir / "logs").glob("crash-*"):
        p.unlink()


def test_dataset_bom_csv_and_explicit_mappings(tmp_path: Path) -> None:
    from zpd.configs.schema import DatasetConfig
    from zpd.loop.domains.dataset_file import DatasetFileError, read_items

    csv = tmp_path / "bom.csv"
    csv.write_bytes(b"\xef\xbb\xbfquestion,answer\n" + b"".join(f"q{i}?,{i}\n".encode() for i in range(5)))
    assert len(read_items(DatasetConfig(enabled=True, path=csv, eval_size=1, bootstrap_size=1))[0]) == 5
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"question": f"q{i}?", "answer": str(i)}) + "\n" for i in range(5)))
    for key in ("solution_field", "category_field"):
        with pytest.raises(DatasetFileError, match=f"domains.dataset.{key}") as err:
            read_items(DatasetConfig(enabled=True, path=jsonl, **{key: "nope"}))
        assert str(jsonl) in str(err.value)
        with pytest.raises(DatasetFileError, match=f"domains.dataset.{key}"):
            read_items(DatasetConfig(enabled=True, path=csv, **{key: "nope"}))


def test_corpus_skips_symlinks_out_and_streams_a_large_file(tmp_path: Path) -> None:
    import resource

    from zpd.store.corpus import ingest
    from zpd.store.db import open_store

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    para = ("The hive keeps its honey in wax cells built by worker bees through the summer. " * 4 + "\n\n")
    with open(docs / "big.txt", "w") as fh:
        for _ in range(80_000):  # about 26 MB
            fh.write(para)
    db = open_store(tmp_path / "c.db")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = ingest(db, docs)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    assert report.skipped.get("outside") == ["passwd.txt"] and report.files_ingested == 1
    assert not db.execute("SELECT 1 FROM corpus_chunks WHERE text LIKE '%root:%'").fetchone()
    assert grown_mb < 25, f"ingest grew by {grown_mb:.0f} MB for a 26 MB file"
    db.conn.close()
    shutil.rmtree(docs)


def test_archive_with_an_absolute_member_or_a_lying_size_is_refused_before_extraction(
        round0_archive: Path, tmp_path: Path) -> None:
    from attack_cases import archive_cases

    cases = dict(archive_cases(round0_archive, tmp_path))
    for name in ("absolute-member", "sparse-20GB", "index-a-list", "index-string-round", "index-deep"):
        outcome = cases[name]()
        assert outcome.handled, (name, outcome.detail)


def test_serve_refuses_bad_lengths_and_oversized_work(run_dir: Path) -> None:
    proc = subprocess.Popen([*ZPD, "serve", "--state-dir", str(run_dir), "--port", "0"],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=zpd_env())
    try:
        port = int(json.loads(proc.stdout.readline())["url"].rsplit(":", 1)[1].split("/")[0])
        from attacks_live import _http, _post

        assert _http(port, _post(b"{}", headers="Content-Length: -1\r\n")) == 400
        assert _http(port, _post(b"{}", headers="Content-Length: abc\r\n")) == 400
        assert _http(port, _post(b"[" * 100_000 + b"]" * 100_000)) == 400
        body = json.dumps({"model": "zpd-learner", "prompt": ["1+1"] * 400, "n": 128}).encode()
        assert _http(port, _post(body, path="/v1/completions")) == 413
        parts = json.dumps({"model": "zpd-learner", "messages": [{"role": "user", "content": [{"text": 5}]}]})
        assert _http(port, _post(parts.encode())) == 400
    finally:
        proc.kill()
        proc.wait(timeout=30)
