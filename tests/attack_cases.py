"""Seeded, generated attacks, by category: archives, serve, user files, configs, the sandbox, kills and
races. Each ``*_cases`` function returns a list of (name, run) where ``run()`` returns an Outcome judged by
tests/attack_lib.py's rules. Used by tests/test_attacks_*.py (one test per case) and bench/attacks.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from attack_lib import Outcome, cli, judge_cli, tree_digest

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
        ("index-dotdot", with_index(lambda i: i["files"].update({f"{rname}/../x": {"bytes": 1, "sha256": "0" * 64}}))),
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
    makers += [(f"truncated-{f:.2f}", truncated(f)) for f in sorted(rng.uniform(0.05, 0.95) for _ in range(4))]
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
    return judge_cli("configs", "fifo-config", lambda: cli("start", "--config", cfg, "--state-dir", target), [target])


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
                "start", "--config", ROOT / "configs" / "dataset.toml", "--state-dir", target, "--rounds", "0",
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
            return Outcome("user files", f"skip-{name}", ok, f"skipped {report.num_skipped}, kept {len(items)}")

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
    (docs / "deep.jsonl").write_text('{"text": ' + "[" * 50_000 + "\n" + '{"text": "a \\ud800 lone surrogate"}\n'
                                     + json.dumps({"text": "A fine record about the hive and its queen bee."}) + "\n")
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
    ok = sources == {"ok.txt", "deep.jsonl"} and report.skipped.get("bad-record") and "outside" in report.skipped
    return Outcome("user files", "corpus-hostile-folder", bool(ok), json.dumps(report.as_dict()))


# -- the sandbox ---------------------------------------------------------------------------------------
HOSTILE = [
    ("write-flood-files", "n=0\ntry:\n  for i in range(10**4):\n    open(f'f{i}','wb').write(b'x'*1000000); n+=1\n"
                          "except OSError: pass\nprint('WROTE', n * 1000000)"),
    ("write-flood-tmp", "n=0\ntry:\n  for i in range(10**4):\n    open(f'/tmp/f{i}','wb').write(b'x'*1000000); n+=1\n"
                        "except OSError: pass\nprint('WROTE', n * 1000000)"),
    ("one-huge-file", "n=0\ntry:\n  f=open('big','wb')\n  for i in range(1000):\n    f.write(b'x'*1000000); n+=1\n"
                      "except OSError: pass\nprint('WROTE', n * 1000000)"),
    ("stdout-flood", "import sys\nsys.stdout.write('x'*50_000_000)"),
    ("stderr-flood", "import sys\nsys.stderr.write('x'*50_000_000)"),
    ("fork-bomb", "import os\nwhile True:\n  try: os.fork()\n  except OSError: pass"),
    ("memory-hog", "x = bytearray(4 << 30)"),
    ("endless-loop", "while True: pass"),
    ("read-shadow", "print(open('/etc/shadow').read())"),
    ("write-etc", "open('/etc/zpd-pwned','w').write('x')"),
    ("write-home", "import os\nopen(os.path.expanduser('~/../zpd-pwned'),'w').write('x')"),
    ("network", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)"),
    ("sleep-forever", "import time\ntime.sleep(10**6)"),
    ("many-open-files", "fs=[open(f'o{i}','w') for i in range(10**5)]"),
    ("kill-parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"),
    ("setsid-orphan", "import os, time\nif os.fork()==0:\n  os.setsid(); time.sleep(60)\n"),
    ("symlink-out", "import os\nos.symlink('/etc/passwd','p')\nprint(open('p').read()[:10])"),
    ("deep-recursion", "def f(n): return f(n+1)\nf(0)"),
    ("mkdir-flood", "import os\nfor i in range(10**6): os.makedirs(f'd/{i}')"),
    ("proc-read", "print(open('/proc/1/environ','rb').read()[:100])"),
]


def sandbox_cases(work: Path, seed: int = 0) -> list[Case]:
    from zpd.loop.tools.sandbox import SandboxLimits, run_python

    rng = random.Random(seed)
    programs = list(HOSTILE)
    for i in range(N - len(programs)):  # seeded variants of the write floods: file size and count
        size, count = rng.choice([4096, 65536, 1 << 20]), rng.randrange(100, 5000)
        where = rng.choice(["", "/tmp/", "sub/"])
        programs.append((f"flood-{i}-{where.strip('/') or 'cwd'}-{size}",
                         f"import os\nos.makedirs('sub', exist_ok=True)\nn=0\ntry:\n  for i in range({count}):\n"
                         f"    open(f'{where}f{{i}}','wb').write(b'x'*{size}); n+=1\nexcept OSError: pass\n"
                         f"print('WROTE', n * {size})"))
    limits = SandboxLimits(wall_seconds=3.0, max_total_bytes=8 << 20)
    canary = work / "canary"

    def run(name: str, code: str) -> Outcome:
        canary.mkdir(exist_ok=True)
        (canary / "keep").write_text("x")
        before = tree_digest(canary)
        try:
            r = run_python(code, limits=limits, allow_unsandboxed=True)
        except Exception as exc:  # noqa: BLE001
            return Outcome("sandbox", name, False, f"{type(exc).__name__}: {exc}"[:160])
        wrote = int(r.stdout.split()[1]) if r.stdout.startswith("WROTE") else 0
        problems = []
        if wrote > limits.max_total_bytes:
            problems.append(f"wrote {wrote} bytes past the {limits.max_total_bytes} cap")
        if r.seconds > limits.wall_seconds + 5:
            problems.append(f"ran {r.seconds:.1f}s")
        if tree_digest(canary) != before or Path("/etc/zpd-pwned").exists():
            problems.append("wrote outside")
        if "root:" in r.stdout:
            problems.append("read a host secret")
        return Outcome("sandbox", name, not problems, "; ".join(problems) or f"rc={r.returncode} {r.isolation}")

    return [(name, lambda name=name, code=code: run(name, code)) for name, code in programs]


# -- serve ---------------------------------------------------------------------------------------------
def _http(port: int, raw: bytes, timeout: float = 10.0, read: bool = True) -> int | None:
    """Send raw bytes; the status code of the answer, or None when the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:
            pass
        if not read:
            return None
        try:
            head = s.recv(64)
        except (TimeoutError, ConnectionResetError):
            return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _post(body: bytes, path: str = "/v1/chat/completions", headers: str | None = None) -> bytes:
    hdrs = headers if headers is not None else f"Content-Length: {len(body)}\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{hdrs}\r\n".encode() + body


def _chat(**kw) -> bytes:
    body = {"model": "zpd-learner", "messages": [{"role": "user", "content": "1+1"}], "max_tokens": 4, **kw}
    return json.dumps(body).encode()


def serve_cases(port: int, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    depth = rng.randrange(20_000, 200_000)
    requests: list[tuple[str, bytes]] = [
        ("content-length-minus-1", _post(b"{}", headers="Content-Length: -1\r\n")),
        ("content-length-abc", _post(b"{}", headers="Content-Length: abc\r\n")),
        ("content-length-float", _post(b"{}", headers="Content-Length: 2.0\r\n")),
        ("content-length-huge", _post(b"{}", headers=f"Content-Length: {10**15}\r\n")),
        ("chunked", _post(b"2\r\n{}\r\n0\r\n\r\n", headers="Transfer-Encoding: chunked\r\n")),
        ("deep-body", _post(b"[" * depth + b"]" * depth)),
        ("deep-messages", _post(json.dumps({"model": "zpd-learner", "messages": []}).encode()[:-2]
                                + b"[" * depth + b"]" * depth + b"]}")),
        ("body-a-list", _post(b"[1]")),
        ("body-not-json", _post(b"{nope")),
        ("body-not-utf8", _post(b'{"model": "\xff"}')),
        ("body-4400-digit-int", _post(b'{"n": ' + b"9" * 4400 + b"}")),
        ("content-part-int", _post(_chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]))),
        ("content-part-list", _post(_chat(messages=[{"role": "user", "content": [{"text": ["a"]}]}]))),
        ("content-a-dict", _post(_chat(messages=[{"role": "user", "content": {"a": 1}}]))),
        ("role-int", _post(_chat(messages=[{"role": 1, "content": "x"}]))),
        ("messages-empty", _post(_chat(messages=[]))),
        ("n-zero", _post(_chat(n=0))),
        ("n-huge", _post(_chat(n=10**6))),
        ("n-bool", _post(_chat(n=True))),
        ("temperature-nan", _post(_chat(temperature=float("nan")))),
        ("max-tokens-negative", _post(_chat(max_tokens=-1))),
        ("work-400-prompts-n128", _post(json.dumps({"model": "zpd-learner", "prompt": ["1+1"] * 400, "n": 128})
                                        .encode(), path="/v1/completions")),
        ("work-8-prompts-n128-no-max", _post(json.dumps({"model": "zpd-learner", "prompt": ["1+1"] * 8, "n": 128})
                                             .encode(), path="/v1/completions")),
        ("prompt-list-of-ints", _post(json.dumps({"model": "zpd-learner", "prompt": [1, 2]}).encode(),
                                      path="/v1/completions")),
        ("wrong-model", _post(_chat(model="gpt-4"))),
        ("stream", _post(_chat(stream=True))),
        ("unknown-path", _post(b"{}", path="/v1/nope")),
        ("bad-request-line", b"GET /v1/models HTTP/1.1 extra\r\n\r\n"),
        ("header-too-long", b"GET /v1/models HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"),
        ("too-many-headers", b"GET /v1/models HTTP/1.1\r\n" + b"".join(b"X%d: 1\r\n" % i for i in range(200)) + b"\r\n"),
    ]

    def run_request(name: str, raw: bytes) -> Outcome:
        status = _http(port, raw)
        alive = _http(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        # A broken request line is answered the HTTP/0.9 way (a body, no status line) by http.server.
        ok = (status is not None and 400 <= status < 500 or name == "bad-request-line") and alive == 200
        return Outcome("serve", name, ok, f"status {status}, then /v1/models {alive}")

    cases: list[Case] = [(n, lambda n=n, r=r: run_request(n, r)) for n, r in requests]
    cases.append(("slow-clients", lambda: _slow_clients(port)))
    cases.append(("connection-flood", lambda: _flood(port)))
    return cases


def _slow_clients(port: int, num: int = 12) -> Outcome:
    """Clients that send half a request and stall: the server drops them at its timeout, others are served."""
    socks = []
    for _ in range(num):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        socks.append(s)
    time.sleep(3.0)  # past the server's 1 s timeout (tests/test_attacks_serve.py)
    closed = 0
    for s in socks:  # dropped at the timeout, or answered 503 at once (past the connection slots)
        try:
            s.settimeout(2.0)
            data = s.recv(64)
            closed += data == b"" or b" 503 " in data
        except OSError:
            closed += 1
        s.close()
    alive = _http(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    return Outcome("serve", "slow-clients", closed == num and alive == 200, f"{closed}/{num} dropped, then {alive}")


def _flood(port: int, num: int = 200) -> Outcome:
    """200 concurrent clients: each is answered (200 or 503), none reset."""
    results: list[int | None] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            code = _http(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=30)
        except OSError:
            code = None
        with lock:
            results.append(code)

    threads = [threading.Thread(target=one) for _ in range(num)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [c for c in results if c not in (200, 503)]
    return Outcome("serve", "connection-flood", not bad,
                   f"{results.count(200)} ok, {results.count(503)} busy, {len(bad)} reset or other")


# -- kills and races -----------------------------------------------------------------------------------
_LOCKER = """
import os, sys, time
from pathlib import Path
from zpd.store.lock import ControllerLock, LockHeld
d, log, discard = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
lock = ControllerLock(d)
try:
    lock.acquire(retry_seconds=2.0)
except LockHeld:
    sys.exit(3)
with open(log, "a") as fh:
    fh.write(f"in {os.getpid()} {time.monotonic()}\\n")
time.sleep(0.02)
with open(log, "a") as fh:
    fh.write(f"out {os.getpid()} {time.monotonic()}\\n")
lock.release(discard=discard)
"""

_SEEDER = """
import json, sys
from pathlib import Path
from zpd.loop.startup import mark_seeded
from zpd.store.archive import read_index, seed_from_snapshot
archive, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
index = read_index(archive)
mark = json.dumps({"archive": str(archive), "round": index["round"], "created_at": index.get("created_at")})
print("seeding", flush=True)
seed_from_snapshot(archive, target, prepare=lambda db: mark_seeded(db, mark))  # what zpd start does
"""


def _py(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_race_cases(archive: Path, state: Path, work: Path, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for i in range(12):
        delay = rng.uniform(0.0, 0.25)
        cases.append((f"kill-seeding-at-{delay:.2f}s", lambda i=i, d=delay: _kill_seed(archive, work / f"k{i}", d)))
    for i in range(10):
        n = rng.randrange(4, 9)
        cases.append((f"lock-race-{n}-procs-{i}", lambda i=i, n=n: _lock_race(work / f"l{i}", n, rng.random())))
    for i in range(8):
        delay = rng.uniform(0.1, 0.8)
        cases.append((f"kill-snapshot-at-{delay:.2f}s",
                      lambda i=i, d=delay: _kill_snapshot(state, work / f"p{i}.tar", d)))
    return cases


def _kill_seed(archive: Path, target: Path, delay: float) -> Outcome:
    """SIGKILL a seeding at a random instant; the next start must seed (or resume) it, not refuse forever."""
    target.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", _SEEDER, str(archive), str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    proc.stdout.readline()  # the kill lands inside the seeding itself
    time.sleep(delay)
    proc.kill()
    proc.wait()
    code, err = cli("start", "--config", SMOKE, "--state-dir", target, "--rounds", "0", "--from-snapshot", archive)
    left = sorted(p.name for p in target.glob(".seed-*"))
    ok = code == 0 and not left and (target / "LATEST").is_file()
    return Outcome("kills and races", f"kill-seeding-at-{delay:.2f}s", ok, f"restart exit {code}, "
                   f"stages left {left} {err.strip()[:120]}")


def _lock_race(target: Path, n: int, discard_share: float) -> Outcome:
    """n processes race for a fresh directory's lock, some deleting the file on release (a refused start):
    never two holders at once."""
    target.mkdir(parents=True)
    log = target.parent / f"{target.name}.log"
    procs = [_py(_LOCKER, target, log, "1" if random.Random(k).random() < discard_share else "0") for k in range(n)]
    for p in procs:
        p.wait(timeout=60)
    events = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    inside, overlap = 0, False
    for kind, _pid, _t in sorted(events, key=lambda e: float(e[2])):
        inside += 1 if kind == "in" else -1
        overlap |= inside > 1
    crashed = [p.stderr.read().decode()[-200:] for p in procs if p.returncode not in (0, 3)]
    ok = not overlap and not crashed and events
    return Outcome("kills and races", f"lock-race-{n}", bool(ok), f"{len(events) // 2} held it, overlap={overlap} "
                   f"{crashed[:1]}")


def _kill_snapshot(state: Path, out: Path, delay: float) -> Outcome:
    """SIGKILL ``zpd snapshot`` at a random instant: the archive is whole or absent (never half-written),
    and the state directory it reads is not changed by a byte."""
    from zpd.store.archive import SnapshotError, read_index

    before = tree_digest(state)
    proc = subprocess.Popen([sys.executable, "-m", "zpd.loop.cli", "snapshot", "--state-dir", str(state),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    whole = True
    if out.exists():
        try:
            read_index(out)
        except SnapshotError:
            whole = False
    stray = [p.name for p in out.parent.iterdir() if p.name.startswith(out.name) and p != out]
    ok = whole and tree_digest(state) == before
    return Outcome("kills and races", f"kill-snapshot-at-{delay:.2f}s", ok,
                   f"archive {'whole' if out.exists() else 'absent'}, temp files {len(stray)}")
