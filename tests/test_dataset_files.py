"""A corpus of malformed task files for the dataset domain: with ``on_bad_row = "reject"`` each is refused
with the file and line named and nothing is imported; with ``"skip"`` the bad row is skipped and counted
and every good row is kept. A bad file given to ``zpd start`` exits 2 naming file and line, before a
single task is stored."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from harness import ROOT, run_zpd

from zpd.configs.schema import DatasetConfig
from zpd.loop.domains.dataset_file import DatasetFileError, read_items

GOOD = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i), "level": i % 4,
         "kind": "add"} for i in range(1, 6)]
BAD_AT = 3  # the bad row goes in as the third line (after the CSV header: the fourth)


def cfg_for(path: Path, **kw) -> DatasetConfig:
    return DatasetConfig(enabled=True, path=path, eval_size=1, bootstrap_size=0, **kw)


def jsonl(rows: list[bytes]) -> bytes:
    lines = [json.dumps(r).encode() for r in GOOD]
    lines[BAD_AT - 1:BAD_AT - 1] = rows
    return b"\n".join(lines) + b"\n"


def obj(**row) -> bytes:
    return json.dumps({**{"question": "A fresh question?", "answer": "7"}, **row}).encode()


def csv_with(bad: str) -> bytes:
    lines = ["question,answer"] + [f'"{r["question"]}",{r["answer"]}' for r in GOOD]
    lines.insert(BAD_AT, bad)
    return ("\n".join(lines) + "\n").encode()


# (id, file name, content, extra config, the line named when rejected; None: a whole-file error)
ROW_CASES = [
    ("broken-json", "a.jsonl", jsonl([b'{"question": "x", "answer": 1']), {}, BAD_AT),
    ("json-garbage", "a.jsonl", jsonl([b"not json at all"]), {}, BAD_AT),
    ("json-array", "a.jsonl", jsonl([b'["q", "a"]']), {}, BAD_AT),
    ("json-string", "a.jsonl", jsonl([b'"just a string"']), {}, BAD_AT),
    ("json-number", "a.jsonl", jsonl([b"42"]), {}, BAD_AT),
    ("missing-question", "a.jsonl", jsonl([b'{"answer": "3"}']), {}, BAD_AT),
    ("missing-answer", "a.jsonl", jsonl([b'{"question": "Q?"}']), {}, BAD_AT),
    ("null-question", "a.jsonl", jsonl([obj(question=None)]), {}, BAD_AT),
    ("null-answer", "a.jsonl", jsonl([obj(answer=None)]), {}, BAD_AT),
    ("question-number", "a.jsonl", jsonl([obj(question=12)]), {}, BAD_AT),
    ("question-list", "a.jsonl", jsonl([obj(question=["a", "b"])]), {}, BAD_AT),
    ("answer-list", "a.jsonl", jsonl([obj(answer=[1, 2])]), {}, BAD_AT),
    ("answer-bool", "a.jsonl", jsonl([obj(answer=True)]), {}, BAD_AT),
    ("answer-object", "a.jsonl", jsonl([obj(answer={"v": 1})]), {}, BAD_AT),
    ("answer-infinity", "a.jsonl", jsonl([b'{"question": "Q?", "answer": Infinity}']), {}, BAD_AT),
    ("empty-question", "a.jsonl", jsonl([obj(question="")]), {}, BAD_AT),
    ("blank-question", "a.jsonl", jsonl([obj(question="   \t ")]), {}, BAD_AT),
    ("empty-answer", "a.jsonl", jsonl([obj(answer="")]), {}, BAD_AT),
    ("answer-only-marker", "a.jsonl", jsonl([obj(answer="some work ####  ")]), {}, BAD_AT),
    ("not-a-number", "a.jsonl", jsonl([obj(answer="seven")]), {"grader": "numeric"}, BAD_AT),
    ("non-utf8", "a.jsonl", jsonl([b'{"question": "caf\xe9?", "answer": "1"}']), {}, BAD_AT),
    ("conflicting-duplicate", "a.jsonl", jsonl([obj(question=GOOD[0]["question"], answer="999")]), {},
     BAD_AT),
    ("difficulty-missing", "a.jsonl", jsonl([obj()]), {"difficulty_field": "level"}, BAD_AT),
    ("difficulty-text", "a.jsonl", jsonl([obj(level="hard")]), {"difficulty_field": "level"}, BAD_AT),
    ("difficulty-nan", "a.jsonl", jsonl([b'{"question": "Q?", "answer": "1", "level": NaN}']),
     {"difficulty_field": "level"}, BAD_AT),
    ("difficulty-bool", "a.jsonl", jsonl([obj(level=False)]), {"difficulty_field": "level"}, BAD_AT),
    ("category-list", "a.jsonl", jsonl([obj(kind=["x"])]), {"category_field": "kind"}, BAD_AT),
    ("solution-object", "a.jsonl", jsonl([obj(work={"a": 1})]), {"solution_field": "work"}, BAD_AT),
    ("line-too-long", "a.jsonl", jsonl([obj(question="x" * 5000)]), {"max_row_bytes": 1000}, BAD_AT),
    ("csv-extra-column", "a.csv", csv_with('"Q?",1,extra'), {}, BAD_AT + 1),
    ("csv-missing-column", "a.csv", csv_with('"Only a question?"'), {}, BAD_AT + 1),
    ("csv-empty-answer", "a.csv", csv_with('"Q?",'), {}, BAD_AT + 1),
    ("csv-non-utf8", "a.csv", csv_with('"Q\udcff?",1').replace(b"\xed\xb3\xbf", b"\xff") if False else
     csv_with("PLACEHOLDER").replace(b"PLACEHOLDER", b'"Q\xff?",1'), {}, BAD_AT + 1),
]

FILE_CASES = [
    ("empty-file", "a.jsonl", b"", {}, "no usable rows"),
    ("blank-lines-only", "a.jsonl", b"\n\n   \n", {}, "no usable rows"),
    ("csv-no-question-column", "a.csv", b"prompt,answer\nQ?,1\n", {}, "no column 'question'"),
    ("parquet-corrupt", "a.parquet", b"PAR1 this is not parquet", {}, "cannot read parquet"),
    ("unknown-suffix", "a.txt", b'{"question": "Q?", "answer": "1"}\n', {}, "format"),
    ("all-rows-bad-skip", "a.jsonl", b"nope\nnope\n", {"on_bad_row": "skip"}, "no usable rows"),
]


@pytest.mark.parametrize("case_id,name,content,extra,line", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_row_rejected_naming_file_and_line_or_skipped(case_id, name, content, extra, line,
                                                          tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetFileError) as err:
        read_items(cfg_for(path, **extra))
    msg = str(err.value)
    assert f"{path}:{line}: " in msg and "\n" not in msg, msg
    print(f"{case_id}: {msg}")
    items, report = read_items(cfg_for(path, on_bad_row="skip", **extra))
    assert len(items) == len(GOOD) and report.num_skipped == 1, report
    assert report.first_errors[0].startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("case_id,name,content,extra,expected", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_unusable_file_rejected_naming_it(case_id, name, content, extra, expected, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetFileError) as err:
        read_items(cfg_for(path, **extra))
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_a_100_mb_line_is_a_bad_row_never_held_whole(tmp_path: Path) -> None:
    import resource

    path = tmp_path / "big.jsonl"
    with open(path, "wb") as fh:
        fh.write(json.dumps(GOOD[0]).encode() + b"\n")
        fh.write(b'{"question": "' + b"x" * (1 << 20) * 100 + b'", "answer": "1"}\n')
        fh.write(json.dumps(GOOD[1]).encode() + b"\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DatasetFileError, match=f"{path}:2: line longer than 1000000 bytes"):
        read_items(cfg_for(path))
    items, report = read_items(cfg_for(path, on_bad_row="skip"))
    assert len(items) == 2 and report.num_skipped == 1
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 50, f"peak RSS grew {grown_mib:.0f} MiB reading a 100 MB line"


def test_exact_duplicates_are_dropped_and_counted_in_both_modes(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    rows = GOOD + [GOOD[0], {**GOOD[1], "question": "  " + GOOD[1]["question"].replace(" ", "   ")}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for mode in ("reject", "skip"):
        items, report = read_items(cfg_for(path, on_bad_row=mode))
        assert len(items) == len(GOOD) and report.num_duplicates == 2 and report.num_skipped == 0


def test_corpus_is_large_enough() -> None:
    assert len(ROW_CASES) + len(FILE_CASES) + 1 >= 30


def test_zpd_start_on_a_bad_file_exits_2_naming_file_and_line_and_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl([b'{"question": "broken"']))
    state = tmp_path / "state"
    out = run_zpd("start", "--config", str(ROOT / "configs" / "dataset.toml"), "--state-dir", str(state),
                  "--rounds", "0", "--set", f"domains.dataset.path={path}", "--set",
                  "domains.dataset.eval_size=1",
                  "--set", "domains.dataset.bootstrap_size=0", timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert f"{path}:{BAD_AT}: invalid JSON" in lines[0], out.stderr
    if (state / "state.db").exists():
        conn = sqlite3.connect(state / "state.db")
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
