"""Real Prometheus tools for tests: find promtool/prometheus, start a Prometheus on loopback, query it.

Missing binaries skip the test with a reason, unless ``ZPD_REQUIRE_PROMETHEUS=1`` (CI installs them
with ``apt-get install -y prometheus``), where they fail it instead::

    from promtools import Prometheus
    with Prometheus(tmp_path, targets=["127.0.0.1:9464"]) as prom:
        value = prom.wait_for_value("zpd_round", lambda v: v == 3)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

REQUIRE_ENV = "ZPD_REQUIRE_PROMETHEUS"


def require_binary(name: str) -> str:
    """Path of ``name`` (promtool, prometheus); skip the test if absent, or fail under
    ZPD_REQUIRE_PROMETHEUS=1."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} not on PATH (apt-get install -y prometheus)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1")
    pytest.skip(reason)


def promtool(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; the completed process (check ``returncode``, ``stdout``, ``stderr``)."""
    return subprocess.run(
        [require_binary("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Prometheus:
    """A Prometheus server on 127.0.0.1:<free port>, scraping ``targets`` every ``scrape_interval``.

    Its config and TSDB live under ``workdir``. ``bearer_token`` (written to a file there) is sent to the
    targets. ``extra_scrape_configs`` are appended as given (Prometheus' own schema). Use as a context
    manager, or call ``start()``/``stop()``. Prometheus 2.x applies new targets on a 5 s tick, so the
    first sample arrives about 6 s after start.
    """

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        *,
        job: str = "zpd",
        metrics_path: str = "/metrics",
        scrape_interval: str = "1s",
        bearer_token: str | None = None,
        rule_files: list[Path] | None = None,
        extra_scrape_configs: list[dict[str, object]] | None = None,
    ) -> None:
        self.workdir = Path(workdir) / "prometheus"
        self.targets, self.job, self.metrics_path = targets, job, metrics_path
        self.scrape_interval, self.bearer_token = scrape_interval, bearer_token
        self.rule_files = [Path(p).resolve() for p in rule_files or []]
        self.extra_scrape_configs = list(extra_scrape_configs or [])
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        scrape: dict[str, object] = {
            "job_name": self.job,
            "scrape_interval": self.scrape_interval,
            "scrape_timeout": self.scrape_interval,
            "metrics_path": self.metrics_path,
            "static_configs": [{"targets": self.targets}],
        }
        if self.bearer_token is not None:
            token_file = self.workdir / "token"
            token_file.write_text(self.bearer_token)
            token_file.chmod(0o600)
            scrape["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [scrape, *self.extra_scrape_configs],
        }
        return json.dumps(config, indent=2)  # JSON is YAML

    def start(self, timeout: float = 30) -> Prometheus:
        binary = require_binary("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self._config())
        self.port = free_port()
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 (owned by the child)
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                if http_get(f"{self.url}/-/ready", timeout=1)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def api(self, path: str, **params: str) -> object:
        """GET /api/v1/<path>; the ``data`` of a successful answer."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url)
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: HTTP {status} {body[:500]}")
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, object]]:
        """Instant query; the result vector as ``[{"metric": {...}, "value": [ts, "str"]}, ...]``."""
        data = self.api("query", query=promql)
        assert isinstance(data, dict)
        return data["result"]

    def targets_health(self) -> list[dict[str, object]]:
        data = self.api("targets")
        assert isinstance(data, dict)
        return data["activeTargets"]

    def wait_for_value(
        self, promql: str, predicate: Callable[[float], bool] = lambda v: True, timeout: float = 30
    ) -> float:
        """Poll an instant query until it returns one sample whose value satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"prometheus is not running:\n{self.log()}")
            last = self.query(promql)
            if len(last) == 1:
                value = float(last[0]["value"][1])  # type: ignore[index]
                if predicate(value):
                    return value
            time.sleep(0.25)
        raise TimeoutError(
            f"{promql!r} not satisfied after {timeout}s; last result {last}; targets {self.targets_health()}"
        )
