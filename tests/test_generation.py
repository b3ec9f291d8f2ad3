"""Generation backends, ``zpd serve`` and the graders that need a model or a library.

The openai backend and the official ``openai`` client talk to a real ``zpd serve`` process over a real
socket; retries are checked against a small stand-in HTTP server on 127.0.0.1. The vLLM backend's tests
(with its test double) are in ``test_vllm_backend.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness import ZPD, query, run_zpd, spawn_zpd, status, wait_for, zpd_env

from zpd.configs.schema import OpenAIEndpointConfig
from zpd.trainer.openai_backend import OpenAIGenerator


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def round0(tmp_path_factory, round0_archive: Path) -> Path:
    """A state directory with round 0 (bootstrap) committed; tests copy it before writing. Seeded from the
    session's round-0 archive (the product's own seeding path) rather than paying for a bootstrap again."""
    from harness import SMOKE

    state = tmp_path_factory.mktemp("gen") / "state"
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "0",
                  "--from-snapshot", str(round0_archive))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return state


class Served:
    def __init__(self, state: Path, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([*ZPD, "serve", "--state-dir", str(state), *args],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env or zpd_env())
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        info = json.loads(line)
        self.url, self.round, self.model = info["url"], info["round"], info["model"]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def served(round0):
    s = Served(round0, "--port", "0")
    yield s
    s.kill()


def _endpoint(url: str, **kw) -> OpenAIEndpointConfig:
    return OpenAIEndpointConfig(base_url=url, model="zpd-learner", **kw)


# -- zpd serve with the official client --------------------------------------------------------------
def test_serve_round_trip_with_official_openai_client(served: Served) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["zpd-learner"]
    kw = dict(model="zpd-learner", messages=[{"role": "user", "content": "12+7"}], n=3, max_tokens=6,
              temperature=0.8, seed=11)
    first = client.chat.completions.create(**kw)
    assert len(first.choices) == 3 and [c.index for c in first.choices] == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in first.choices)
    assert 0 < first.usage.completion_tokens <= 18 and first.usage.prompt_tokens > 4
    again = client.chat.completions.create(**kw)  # same seed -> same samples
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]
    text = client.completions.create(model="zpd-learner", prompt=["1+1", "2+2"], max_tokens=4, temperature=0)
    assert len(text.choices) == 2 and all(c.finish_reason in ("stop", "length") for c in text.choices)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "1"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="zpd-learner", messages=[{"role": "user", "content": "1"}],
                                       stream=True)


def test_openai_backend_against_zpd_serve(served: Served) -> None:
    gen = OpenAIGenerator(_endpoint(served.url, max_concurrency=4))
    outs = gen.generate(["1+2", "30+4", "5+5"], n=2, temperature=0.7, max_tokens=5, seed=3)
    assert [len(o) for o in outs] == [2, 2, 2]
    for c in (c for o in outs for c in o):
        assert not c.failed and 0 < c.num_tokens <= 5 and c.prompt_tokens > 0 and c.latency_seconds > 0
        assert c.finish_reason == "length" or c.num_tokens < 5
    again = gen.generate(["1+2"], n=2, temperature=0.7, max_tokens=5, seed=3)[0]
    assert [c.text for c in again] == [c.text for c in outs[0]]  # seeded per request


def test_serve_errors_and_token(round0: Path, tmp_path: Path) -> None:
    out = run_zpd("serve", "--state-dir", str(round0), "--round", "99", "--port", "0", timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "round 99" in out.stderr
    out = run_zpd("serve", "--state-dir", str(tmp_path / "nope"), "--port", "0", timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    env = zpd_env()
    env.pop("ZPD_SERVE_TOKEN", None)
    out = subprocess.run([*ZPD, "serve", "--state-dir", str(round0), "--host", "0.0.0.0", "--port", "0"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "ZPD_SERVE_TOKEN" in out.stderr
    env["ZPD_SERVE_TOKEN"] = "s3cret"
    s = Served(round0, "--round", "0", "--port", "0", env=env)
    try:
        import httpx

        assert httpx.get(s.url + "/models").status_code == 401
        ok = httpx.get(s.url + "/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["data"][0]["zpd_round"] == 0
        os.environ["ZPD_TEST_KEY"] = "s3cret"
        gen = OpenAIGenerator(_endpoint(s.url, api_key_env="ZPD_TEST_KEY"))
        assert not gen.generate(["1+1"], max_tokens=3)[0][0].failed
    finally:
        s.kill()
        os.environ.pop("ZPD_TEST_KEY", None)
    assert "s3cret" not in s.proc.stderr.read()


# -- retries against a stand-in server ------------------------------------------------------------------
class StandIn:
    """A stand-in for an OpenAI-compatible server on 127.0.0.1: answers from a script, one entry per
    request."""

    def __init__(self, script: list[str]) -> None:
        self.script, self.seen = list(script), 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                step = outer.script.pop(0) if outer.script else "ok"
                outer.seen += 1
                if step == "ok" or step == "length":
                    body = json.dumps({"choices": [{"message": {"content": "42"},
                                                    "finish_reason": step if step == "length" else "stop"}],
                                       "usage": {"prompt_tokens": 7, "completion_tokens": 2}}).encode()
                    self._reply(200, body)
                elif step == "429":
                    self._reply(429, b'{"error": "slow down"}', {"Retry-After": "0"})
                elif step.isdigit():
                    self._reply(int(step), b'{"error": "nope"}')
                elif step == "malformed":
                    self._reply(200, b'{"choices": [ {"mess')
                elif step == "truncated":  # promises more bytes than it sends, then hangs up
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [')
                    self.wfile.flush()
                    self.close_connection = True

            def _reply(self, code: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_backend_retries_429_5xx_malformed_and_truncated() -> None:
    server = StandIn(["429", "503", "malformed", "truncated", "ok"])
    try:
        gen = OpenAIGenerator(_endpoint(server.url, max_retries=4, backoff_seconds=0.01, max_concurrency=1))
        (c,), = gen.generate(["q"], max_tokens=4)
        assert not c.failed and c.text == "42" and c.num_tokens == 2 and c.prompt_tokens == 7
        assert gen.num_retries == 4 and server.seen == 5
        server.script = ["500", "500", "500"]
        few = OpenAIGenerator(_endpoint(server.url, max_retries=2, backoff_seconds=0.01))
        (c,), = few.generate(["q"], max_tokens=4)
        assert c.failed and c.finish_reason == "error" and "HTTP 500" in c.error and c.text == ""
        server.script = ["400"]
        before = server.seen
        (c,), = gen.generate(["q"], max_tokens=4)
        assert c.failed and "HTTP 400" in c.error and server.seen == before + 1  # not retried
        server.script = ["length"]
        (c,), = gen.generate(["q"], max_tokens=4)
        assert c.finish_reason == "length" and not c.failed  # cut at max tokens: graded as given
    finally:
        server.close()
    down = OpenAIGenerator(_endpoint(server.url, max_retries=1, backoff_seconds=0.01))
    (c,), = down.generate(["q"], max_tokens=4)
    assert c.failed and "ConnectError" in c.error


def test_openai_backend_bounds_concurrency() -> None:
    server = StandIn([])
    try:
        gen = OpenAIGenerator(_endpoint(server.url, max_concurrency=3))
        outs = gen.generate([f"p{i}" for i in range(5)], n=2, max_tokens=4)
        assert [len(o) for o in outs] == [2] * 5 and server.seen == 10
    finally:
        server.close()


def test_api_key_variable_must_be_set() -> None:
    os.environ.pop("ZPD_TEST_MISSING", None)
    with pytest.raises(ValueError, match=r"\$ZPD_TEST_MISSING"):
        OpenAIGenerator(_endpoint("http://127.0.0.1:9/v1", api_key_env="ZPD_TEST_MISSING"))


# -- math-verify under a time limit -------------------------------------------------------------------
def test_math_verify_grader_and_its_time_limit() -> None:
    from zpd.loop.domains.math_grader import MathVerifyGrader

    g = MathVerifyGrader(timeout_seconds=10)
    try:
        assert g.grade("\\frac{1}{2}", "the answer is $0.5$").correct
        assert not g.grade("3", "$4$").correct
    finally:
        g.close()
    slow = MathVerifyGrader(timeout_seconds=0.5, target="generation_doubles:hang")
    try:
        assert slow.grade("1", "1").correct
        t0 = time.monotonic()
        stuck = slow.grade("1", "hang")
        assert not stuck.correct and "timeout" in stuck.error and time.monotonic() - t0 < 5
        assert slow.grade("2", "2").correct  # a fresh worker after the kill
    finally:
        slow.close()


# -- the daemon through the openai backend; the server killed mid-phase --------------------------------
def test_calibration_through_zpd_serve_survives_a_killed_server(round0: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(round0, state)
    server = Served(state, "--port", "0")
    from harness import SMOKE

    args = ["start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
            "--set", "generation.backend=openai", "--set", "generation.measure_backend=embedded",
            "--set", f'generation.openai.base_url="{server.url}"', "--set", "generation.openai.max_retries=1",
            "--set", "generation.openai.backoff_seconds=0.05", "--set", "calibration.batch_size=4",
            "--set", "train.max_retries=0"]
    daemon = spawn_zpd(*args, log=tmp_path / "d1.log")
    try:
        wait_for(lambda: query(state, "SELECT count(*) FROM attempts WHERE round = 1")[0][0] > 0, 180,
                 what="first calibrated batch")
        server.kill()
        # The round failed (its retries spent): exit 1, nothing half-done.
        assert daemon.wait(timeout=180) == 1
    finally:
        if daemon.poll() is None:
            daemon.kill()
        server.kill()
    failed = query(state,
                   "SELECT count(*) FROM failed_attempts WHERE round = 1 AND phase = 'calibrate'")[0][0]
    assert failed > 0
    assert query(state, "SELECT count(*) FROM tasks WHERE round = 1 AND fate = 'pending'")[0][0] > 0
    assert query(state, "SELECT phase FROM rounds WHERE id = 1")[0][0] == "calibrate"
    log = [json.loads(x) for x in (state / "logs" / "zpd.jsonl").read_text().splitlines()]
    assert any(x["event"] == "phase failed" and x["component"] == "generator" for x in log)
    s = status(state)
    assert s["generation"]["learner"]["failed"] == failed and s["teacher"] is None
    before = query(state, "SELECT count(*) FROM attempts WHERE round = 1")[0][0]

    server = Served(state, "--port", str(server.port))  # the same endpoint comes back
    try:
        again = run_zpd(*args)
        assert again.returncode == 0, again.stdout[-3000:]
    finally:
        server.kill()
    assert status(state)["last_committed_round"] == 1
    assert query(state, "SELECT count(*) FROM tasks WHERE round = 1 AND fate = 'pending'")[0][0] == 0
    assert query(state, "SELECT count(*) FROM attempts WHERE round = 1")[0][0] > before
    dupes = query(state, "SELECT count(*) FROM (SELECT task_id, mode, sample_idx, count(*) c FROM attempts "
                         "WHERE round = 1 GROUP BY 1, 2, 3 HAVING c > 1)")[0][0]
    assert dupes == 0


# -- the teacher's spending cap --------------------------------------------------------------------------
def test_spending_cap_pauses_the_teacher(round0: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(round0, state)
    from harness import SMOKE

    teacher = state / "rounds" / "round_000000" / "learner"  # any local model will do as the teacher here
    # $1 per output token, 2 samples x 8 tokens: a task's worst case is $16; the cap lets 2 tasks through.
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "1",
                  "--set", "teacher.backend=embedded", "--set", f'teacher.model="{teacher}"',
                  "--set", "teacher.price_output_usd_per_mtok=1000000", "--set", "teacher.max_cost_usd=40",
                  "--set", "teacher.max_tokens=8")
    assert out.returncode == 0, out.stdout[-3000:]
    s = status(state)
    t = s["teacher"]
    assert t["paused"] is True and t["max_cost_usd"] == 40 and 0 < t["spent_usd"] <= 40
    assert t["awaiting_tasks"] > 0 and t["paused_round"] == 1
    assert s["generation"]["teacher"]["cost_usd"] == t["spent_usd"]
    pending = query(state, "SELECT count(*) FROM tasks WHERE fate = 'pending'")[0][0]
    assert pending == t["awaiting_tasks"] > 0
    assert query(state, "SELECT count(DISTINCT task_id) FROM attempts WHERE role = 'teacher'")[0][0] <= 2
    assert query(state, "SELECT count(*) FROM attempts WHERE role = 'teacher' AND learner_ref = ?",
                 (str(teacher),))[0][0] > 0
    log = [json.loads(x) for x in (state / "logs" / "zpd.jsonl").read_text().splitlines()]
    assert any(x["event"].startswith("teacher paused") for x in log)
    # The next round still pauses (the cap has not moved) and never spends past it.
    out = run_zpd("start", "--config", str(SMOKE), "--state-dir", str(state), "--rounds", "2",
                  "--set", "teacher.backend=embedded", "--set", f'teacher.model="{teacher}"',
                  "--set", "teacher.price_output_usd_per_mtok=1000000", "--set", "teacher.max_cost_usd=40",
                  "--set", "teacher.max_tokens=8")
    assert out.returncode == 0, out.stdout[-3000:]
    assert status(state)["teacher"]["spent_usd"] <= 40 and status(state)["teacher"]["paused"]
