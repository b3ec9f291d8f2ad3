"""Seeded, generated attacks on zpd's inputs: archives, configs, user files (tests/attacks_live.py has
the sandbox, serve, kills and races). Each ``*_cases`` function returns a list of (name, run) where
``run()`` returns an Outcome judged by tests/attack_lib.py's rules. Used by tests/test_attacks_*.py (one
test per case) and bench/attacks.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
from collections.abc import Callable
from pathlib import Path

from attack_lib import Outcome, cli, judge_cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.toml"
Case = tuple[str, Callable[[], Outcome]]
N = 30


# -- archives ------------------------------------------------------------------------------------------
def _members(archive: Path) -> tuple[dict, list[tuple[tarfile.TarInfo, bytes]]]:
    with tarfile.open(archive) as tar:
        out = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]
    index = json.loads(next(d for m, d in out if m.name == "SNAPSHOT.json"))
    return index, [(m, d) for m, d in out if m.name != "SNAPSHOT.json"]


def _tar(path: Path, index_bytes: bytes | None, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        if index_bytes is not None:
            info = tarfile.TarInfo("SNAPSHOT.json")
            info.size = len(index_bytes)
            tar.addfile(info, io.BytesIO(index_bytes))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def archive_cases(archive: Path, work: Path, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    index, members = _members(archive)
    rname = f"round_{index['round']:06d}"
    host = Path("/etc/hostname") if Path("/etc/hostname").is_file() else Path(__file__)

    def with_index(mutate: Callable[[dict], object]) -> Callable[[Path], Path]:
        def make(p: Path) -> Path:
            idx = json.loads(json.dumps(index))
            new = mutate(idx)
            return _tar(p, json.dumps(idx if new is None else new).encode(), members)
        return make

    def absolute(p: Path) -> Path:  # the index carries the host file's real hash under an absolute name
        import hashlib

        idx = json.loads(json.dumps(index))
        data = host.read_bytes()
        idx["files"][str(host)] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        info = tarfile.TarInfo(str(host))
        info.size = len(data)
        return _tar(p, json.dumps(idx).encode(), [*members, (info, data)])

    def sparse(p: Path) -> Path:  # a 20 GB claim in a small archive
        idx = json.loads(json.dumps(index))
        big = f"{rname}/learner/huge.bin"
        idx["files"][big] = {"bytes": 20 << 30, "sha256": "0" * 64}
        return _tar(p, json.dumps(idx).encode(), members)

    def member_mismatch(p: Path) -> Path:
        m, d = members[0]
        info = tarfile.TarInfo(m.name)
        info.size = len(d) // 2
        return _tar(p, json.dumps(index).encode(), [(info, d[: len(d) // 2]), *members[1:]])

    def link(kind: bytes) -> Callable[[Path], Path]:
        def make(p: Path) -> Path:
            info = tarfile.TarInfo(members[0][0].name)
            info.type, info.linkname = kind, "/etc/passwd"
            return _tar(p, json.dumps(index).encode(), [(info, b""), *members[1:]])
        return make

    def extra(p: Path) -> Path:
        info = tarfile.TarInfo(f"{rname}/../../evil")
        info.size = 4
        return _tar(p, json.dumps(index).encode(), [*members, (info, b"evil")])

    def truncated(frac: float) -> Callable[[Path], Path]:
        def make(p: Path) -> Path:
            data = archive.read_bytes()
            p.write_bytes(data[: max(1, int(len(data) * frac))])
            return p
        return make

    def flipped(p: Path) -> Path:
        data = bytearray(archive.read_bytes())
        for _ in range(8):
            pos = rng.randrange(1024, len(data))
            data[pos] ^= 0xFF
        p.write_bytes(bytes(data))
        return p

    def fifo(p: Path) -> Path:
        os.mkfifo(p)
        return p

    def gz(p: Path) -> Path:
        p.write_bytes(gzip.compress(archive.read_bytes()))
        return p

    def deep(p: Path) -> Path:
        return _tar(p, b"[" * 200_000 + b"]" * 200_000, members)

    makers: list[tuple[str, Callable[[Path], Path]]] = [
        ("index-a-list", with_index(lambda i: [i])),
        ("index-no-round", with_index(lambda i: i.pop("round"))),
        ("index-no-files", with_index(lambda i: i.pop("files"))),
        ("index-string-round", with_index(lambda i: i.update(round=str(i["round"])))),
        ("index-bool-round", with_index(lambda i: i.update(round=True))),
        ("index-huge-round", with_index(lambda i: i.update(round=10**30))),
        ("index-files-a-list", with_index(lambda i: i.update(files=list(i["files"])))),
        ("index-files-empty", with_index(lambda i: i.update(files={}))),
        ("index-entry-a-string", with_index(lambda i: i["files"].update({next(iter(i["files"])): "x"}))),
        ("index-entry-negative", with_index(lambda i: next(iter(i["files"].values())).update(bytes=-1))),
        ("index-entry-bad-hash", with_index(lambda i: next(iter(i["files"].values())).update(sha256="zz"))),
        ("index-format-99", with_index(lambda i: i.update(format_version=99))),
        ("index-dotdot",
         with_index(lambda i: i["files"].update({f"{rname}/../x": {"bytes": 1, "sha256": "0" * 64}}))),
        ("index-deep", deep),
        ("index-not-json", lambda p: _tar(p, b"{not json", members)),
        ("index-missing", lambda p: _tar(p, None, members)),
        ("absolute-member", absolute),
        ("sparse-20GB", sparse),
        ("member-size-mismatch", member_mismatch),
        ("symlink-member", link(tarfile.SYMTYPE)),
        ("hardlink-member", link(tarfile.LNKTYPE)),
        ("extra-traversal-member", extra),
        ("gzip-compressed", gz),
        ("fifo", fifo),
        ("empty-file", lambda p: (p.write_bytes(b""), p)[1]),
        ("directory", lambda p: (p.mkdir(), p)[1]),
        ("random-bytes", lambda p: (p.write_bytes(rng.randbytes(4096)), p)[1]),
    ]
    makers += [(f"truncated-{f:.2f}",
                truncated(f)) for f in sorted(rng.uniform(0.05, 0.95) for _ in range(4))]
    makers += [(f"flipped-{i}", flipped) for i in range(3)]
    makers.append(("newline-in-name", lambda p: _tar(p.with_name("bad\nname.tar"), b"[]", members)))

    cases = []
    for i, (name, make) in enumerate(makers):
        def run(i: int = i, name: str = name, make: Callable[[Path], Path] = make) -> Outcome:
            src = make(work / f"a{i}.tar")
            target = work / f"t{i}"
            return judge_cli("archives", name, lambda: cli("start", "--config", SMOKE, "--state-dir", target,
                                                          "--rounds", "0", "--from-snapshot", src), [target])
        cases.append((name, run))
    return cases


# -- configs -------------------------------------------------------------------------------------------
def config_cases(work: Path, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    base = SMOKE.read_text()
    edits: list[tuple[str, str | bytes, list[str]]] = [
        ("bool-for-int", base, ["calibration.num_solo=true"]),
        ("bool-for-float", base, ["train.epochs=false"]),
        ("4400-digit-int-set", base, ["run.seed=" + "9" * 4400]),
        ("4400-digit-int-file", base.replace("seed = 0", "seed = " + "7" * 4400), []),
        ("deep-array-set", base, ["run.seed=" + "[" * 5000 + "]" * 5000]),
        ("deep-table-file", base + "\nx = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n", []),
        ("deep-array-file", base + "\n[z]\nx = " + "[" * 5000 + "]" * 5000 + "\n", []),
        ("nan", base, ["train.epochs=nan"]),
        ("inf", base, ["train.learning_rate=inf"]),
        ("date-for-int", base, ["run.seed=1979-05-27"]),
        ("string-for-int", base, ['calibration.num_solo="3"']),
        ("float-for-int", base, ["calibration.num_solo=2.0"]),
        ("list-for-int", base, ["calibration.num_solo=[1]"]),
        ("table-for-int", base, ["calibration.num_solo={a=1}"]),
        ("negative", base, ["calibration.num_solo=-5"]),
        ("unknown-key", base, ["calibration.nope=1"]),
        ("unknown-section", base + "\n[nope]\nx = 1\n", []),
        ("not-utf8", base.encode() + b"\n# \xff\xfe\n", []),
        ("nul-bytes", base.encode() + b"\x00\x00", []),
        ("huge-string", base, ["learner.path=" + "x" * 100_000]),
        ("newline-key", base, ["calibration.num\nsolo=1"]),
        ("empty-set", base, ["="]),
        ("metrics-off-loopback", base, ["metrics.host='0.0.0.0'"]),
        ("section-scalar", "run = 5\n", []),
        ("bom", b"\xef\xbb\xbf" + base.encode(), []),
    ]
    for _ in range(N - len(edits) + 2):  # random truncations of the file and random garbage overrides
        cut = rng.randrange(10, len(base))
        text = base[:cut] + rng.choice(["\n[", "\n=", '\nx = "', "\n]]", "\nx = [", "\n[[x"])  # never valid
        edits.append((f"truncated-at-{cut}", text, []))
    cases = []
    for i, (name, text, sets) in enumerate(edits):
        def run(i: int = i, name: str = name, text: str | bytes = text, sets: list[str] = sets) -> Outcome:
            cfg = work / f"c{i}.toml"
            cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
            target = work / f"s{i}"
            args = ["start", "--config", cfg, "--state-dir", target, "--rounds", "0"]
            for s in sets:
                args += ["--set", s]
            return judge_cli("configs", name, lambda: cli(*args), [target])
        cases.append((name, run))
    cases.append(("fifo-config", lambda: _fifo_config(work)))
    return cases


def _fifo_config(work: Path) -> Outcome:
    cfg = work / "fifo.toml"
    os.mkfifo(cfg)
    target = work / "sfifo"
    return judge_cli("configs", "fifo-config", lambda: cli("start", "--config", cfg, "--state-dir", target),
                     [target])


# -- user files: dataset and corpus ---------------------------------------------------------------------
GOOD = [json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i), "solution": f"{i}+{i}",
                    "difficulty": i % 5, "category": "add"}) for i in range(1, 80)]


def _bad_rows(rng: random.Random) -> list[tuple[str, str]]:
    big = "1" + "0" * rng.randrange(400, 600)
    return [
        ("deep-json", "[" * rng.randrange(5000, 100_000)),
        ("4400-digit-int", '{"question": "q?", "answer": ' + "7" * rng.randrange(4400, 6000) + "}"),
        ("overflowing-fraction", json.dumps({"question": "f?", "answer": f"{big}/3"})),
        ("difficulty-1e400", '{"question": "d?", "answer": "1", "difficulty": 1e400}'),
        ("difficulty-huge-int", '{"question": "d?", "answer": "1", "difficulty": ' + big + "}"),
        ("lone-surrogate", '{"question": "a \\ud800 b?", "answer": "1"}'),
        ("surrogate-answer", '{"question": "s?", "answer": "\\udfff"}'),
        ("not-an-object", "[1, 2, 3]"),
        ("null-question", '{"question": null, "answer": "1"}'),
        ("list-answer", '{"question": "l?", "answer": [1]}'),
        ("bool-difficulty", '{"question": "b?", "answer": "1", "difficulty": true}'),
        ("nan-answer", '{"question": "n?", "answer": NaN}'),
        ("not-utf8", '{"question": "\xff?", "answer": "1"}'),
        ("truncated-json", '{"question": "t?", "answer": '),
        ("empty-answer", '{"question": "e?", "answer": "  "}'),
        ("conflicting-duplicate", json.dumps({"question": "What is 1 + 1?", "answer": "3"})),
        ("dict-category", '{"question": "c?", "answer": "1", "category": {"a": 1}}'),
    ]


def user_file_cases(work: Path, seed: int = 0) -> list[Case]:
    from zpd.configs.schema import DatasetConfig
    from zpd.loop.domains.dataset_file import DatasetFileError, read_items

    rng = random.Random(seed)
    cases: list[Case] = []
    for name, row in _bad_rows(rng):
        at = rng.randrange(1, len(GOOD))
        lines = GOOD[:at] + [row] + GOOD[at:]
        path = work / f"{name}.jsonl"

        def reject(path: Path = path, lines: list[str] = lines, name: str = name, at: int = at) -> Outcome:
            path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape").replace(b"\\xff", b"\xff"))
            target = work / f"ds-{name}"
            out = judge_cli("user files", f"reject-{name}", lambda: cli(
                "start", "--config", ROOT / "configs" / "dataset.toml", "--state-dir", target, "--rounds",
                "0",
                "--set", f"domains.dataset.path='{path}'", "--set", "domains.dataset.grader='numeric'",
                "--set", "domains.dataset.difficulty_field='difficulty'"), [target])
            if out.handled and f"{path.name}:{at + 1}" not in out.detail:
                out.handled, out.detail = False, f"the line does not name {path.name}:{at + 1}: {out.detail}"
            return out

        def skip(path: Path = path, lines: list[str] = lines, name: str = name) -> Outcome:
            path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape").replace(b"\\xff", b"\xff"))
            cfg = DatasetConfig(enabled=True, path=path, on_bad_row="skip", grader="numeric",
                                difficulty_field="difficulty", eval_size=5, bootstrap_size=5)
            try:
                items, report = read_items(cfg)
            except DatasetFileError as exc:
                return Outcome("user files", f"skip-{name}", False, f"refused in skip mode: {exc}")
            except Exception as exc:  # noqa: BLE001 - that is the finding
                return Outcome("user files", f"skip-{name}", False, f"{type(exc).__name__}: {exc}"[:160])
            ok = report.num_skipped == 1 and len(items) == len(GOOD)
            return Outcome("user files", f"skip-{name}", ok,
                           f"skipped {report.num_skipped}, kept {len(items)}")

        cases += [(f"reject-{name}", reject), (f"skip-{name}", skip)]
    cases += [("corpus-hostile-folder", lambda: _corpus_case(work, rng)), ("csv-bom", lambda: _csv_bom(work))]
    return cases


def _csv_bom(work: Path) -> Outcome:
    from zpd.configs.schema import DatasetConfig
    from zpd.loop.domains.dataset_file import read_items

    path = work / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfquestion,answer\n" + b"".join(f"q{i}?,{i}\n".encode() for i in range(20)))
    try:
        items, _ = read_items(DatasetConfig(enabled=True, path=path, eval_size=2, bootstrap_size=2))
    except Exception as exc:  # noqa: BLE001
        return Outcome("user files", "csv-bom", False, str(exc)[:160])
    return Outcome("user files", "csv-bom", len(items) == 20, f"{len(items)} items")


def _corpus_case(work: Path, rng: random.Random) -> Outcome:
    from zpd.store.corpus import ingest
    from zpd.store.db import open_store

    docs = work / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("Bees make honey from nectar they gather from flowers in spring.\n")
    (docs / "deep.jsonl").write_text('{"text": ' + "[" * 50_000 + "\n" + '{"text": "a \\ud800 lone '
                                     'surrogate"}\n'
                                     + json.dumps({"text": "A fine record about the hive and its queen bee."})
                                     + "\n")
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "bin.txt").write_bytes(b"\x00" * 100)
    (docs / "latin1.md").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    os.mkfifo(docs / "pipe.txt")
    db = open_store(work / "corpus.db")
    try:
        report = ingest(db, docs)
    except Exception as exc:  # noqa: BLE001
        return Outcome("user files", "corpus-hostile-folder", False, f"{type(exc).__name__}: {exc}"[:160])
    sources = {r[0] for r in db.execute("SELECT DISTINCT source FROM corpus_chunks").fetchall()}
    db.conn.close()
    ok = sources == {"ok.txt",
                     "deep.jsonl"} and report.skipped.get("bad-record") and "outside" in report.skipped
    return Outcome("user files", "corpus-hostile-folder", bool(ok), json.dumps(report.as_dict()))
