"""Seeded, generated attacks on zpd's running parts: the sandbox, serve, kills and races (the inputs'
cases are in tests/attack_cases.py). Same contract: ``*_cases`` return (name, run) pairs, ``run()`` an
Outcome judged by tests/attack_lib.py's rules.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from attack_cases import SMOKE, Case, N
from attack_lib import Outcome, cli, tree_digest

# -- the sandbox ---------------------------------------------------------------------------------------
HOSTILE = [
    ("write-flood-files",
     "n=0\ntry:\n  for i in range(10**4):\n    open(f'f{i}','wb').write(b'x'*1000000); n+=1\n"
                          "except OSError: pass\nprint('WROTE', n * 1000000)"),
    ("write-flood-tmp",
     "n=0\ntry:\n  for i in range(10**4):\n    open(f'/tmp/f{i}','wb').write(b'x'*1000000); n+=1\n"
                        "except OSError: pass\nprint('WROTE', n * 1000000)"),
    ("one-huge-file",
     "n=0\ntry:\n  f=open('big','wb')\n  for i in range(1000):\n    f.write(b'x'*1000000); n+=1\n"
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
    from zpd.loop.domains.sandbox import SandboxLimits, run_python

    rng = random.Random(seed)
    programs = list(HOSTILE)
    for i in range(N - len(programs)):  # seeded variants of the write floods: file size and count
        size, count = rng.choice([4096, 65536, 1 << 20]), rng.randrange(100, 5000)
        where = rng.choice(["", "/tmp/", "sub/"])
        programs.append((f"flood-{i}-{where.strip('/') or 'cwd'}-{size}",
                         f"import os\nos.makedirs('sub', exist_ok=True)\nn=0\ntry:\n  for i in "
                         f"range({count}):\n"
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
        return Outcome("sandbox", name, not problems,
                       "; ".join(problems) or f"rc={r.returncode} {r.isolation}")

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
        ("content-part-int", _post(_chat(messages=[{"role": "user",
                                                    "content": [{"type": "text", "text": 5}]}]))),
        ("content-part-list", _post(_chat(messages=[{"role": "user", "content": [{"text": ["a"]}]}]))),
        ("content-a-dict", _post(_chat(messages=[{"role": "user", "content": {"a": 1}}]))),
        ("role-int", _post(_chat(messages=[{"role": 1, "content": "x"}]))),
        ("messages-empty", _post(_chat(messages=[]))),
        ("n-zero", _post(_chat(n=0))),
        ("n-huge", _post(_chat(n=10**6))),
        ("n-bool", _post(_chat(n=True))),
        ("temperature-nan", _post(_chat(temperature=float("nan")))),
        ("max-tokens-negative", _post(_chat(max_tokens=-1))),
        ("work-400-prompts-n128", _post(json.dumps({"model": "zpd-learner", "prompt": ["1+1"] * 400,
                                                    "n": 128})
                                        .encode(), path="/v1/completions")),
        ("work-8-prompts-n128-no-max", _post(json.dumps({"model": "zpd-learner", "prompt": ["1+1"] * 8,
                                                         "n": 128})
                                             .encode(), path="/v1/completions")),
        ("prompt-list-of-ints", _post(json.dumps({"model": "zpd-learner", "prompt": [1, 2]}).encode(),
                                      path="/v1/completions")),
        ("wrong-model", _post(_chat(model="gpt-4"))),
        ("stream", _post(_chat(stream=True))),
        ("unknown-path", _post(b"{}", path="/v1/nope")),
        ("bad-request-line", b"GET /v1/models HTTP/1.1 extra\r\n\r\n"),
        ("header-too-long", b"GET /v1/models HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"),
        ("too-many-headers",
         b"GET /v1/models HTTP/1.1\r\n" + b"".join(b"X%d: 1\r\n" % i for i in range(200)) + b"\r\n"),
    ]

    def run_request(name: str, raw: bytes) -> Outcome:
        status = _http(port, raw)
        # A 503 is the connection cap's answer (Retry-After: 1) while earlier cases' handler threads are
        # still ending (a loaded machine): a client retries, and the retried request must get its 4xx.
        for _ in range(3):
            if status != 503:
                break
            time.sleep(1.0)
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
    return Outcome("serve", "slow-clients", closed == num and alive == 200,
                   f"{closed}/{num} dropped, then {alive}")


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
from zpd.store.connect import mark_seeded
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
        cases.append((f"kill-seeding-at-{delay:.2f}s", lambda i=i,
                      d=delay: _kill_seed(archive, work / f"k{i}", d)))
    for i in range(10):
        n = rng.randrange(4, 9)
        cases.append((f"lock-race-{n}-procs-{i}", lambda i=i,
                      n=n: _lock_race(work / f"l{i}", n, rng.random())))
    for i in range(8):
        delay = rng.uniform(0.1, 0.8)
        cases.append((f"kill-snapshot-at-{delay:.2f}s",
                      lambda i=i, d=delay: _kill_snapshot(state, work / f"p{i}.tar", d)))
    return cases


def _kill_seed(archive: Path, target: Path, delay: float) -> Outcome:
    """SIGKILL a seeding at a random instant; the next start must seed (or resume) it, not refuse forever."""
    target.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", _SEEDER, str(archive), str(target)],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    proc.stdout.readline()  # the kill lands inside the seeding itself
    time.sleep(delay)
    proc.kill()
    proc.wait()
    code, err = cli("start", "--config", SMOKE, "--state-dir", target, "--rounds", "0", "--from-snapshot",
                    archive)
    left = sorted(p.name for p in target.glob(".seed-*"))
    ok = code == 0 and not left and (target / "LATEST").is_file()
    return Outcome("kills and races", f"kill-seeding-at-{delay:.2f}s", ok, f"restart exit {code}, "
                   f"stages left {left} {err.strip()[:120]}")


def _lock_race(target: Path, n: int, discard_share: float) -> Outcome:
    """n processes race for a fresh directory's lock, some deleting the file on release (a refused start):
    never two holders at once."""
    target.mkdir(parents=True)
    log = target.parent / f"{target.name}.log"
    procs = [_py(_LOCKER, target, log,
                 "1" if random.Random(k).random() < discard_share else "0") for k in range(n)]
    for p in procs:
        p.wait(timeout=60)
    events = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    inside, overlap = 0, False
    for kind, _pid, _t in sorted(events, key=lambda e: float(e[2])):
        inside += 1 if kind == "in" else -1
        overlap |= inside > 1
    crashed = [p.stderr.read().decode()[-200:] for p in procs if p.returncode not in (0, 3)]
    ok = not overlap and not crashed and events
    return Outcome("kills and races", f"lock-race-{n}", bool(ok),
                   f"{len(events) // 2} held it, overlap={overlap} "
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
