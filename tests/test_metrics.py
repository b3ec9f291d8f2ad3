"""DaemonMetrics through real HTTP: the exposed contract, probes, auth, promtool and a real Prometheus."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from promtools import Prometheus, http_get, promtool

from zpd.loop.metrics import (
    COMPONENTS,
    CONTRACT,
    FATES,
    MODES,
    OUTCOMES,
    PHASES,
    ROLES,
    DaemonMetrics,
)

DOMAINS = ["arithmetic", "dataset"]


@pytest.fixture
def metrics() -> Iterator[DaemonMetrics]:
    m = DaemonMetrics(DOMAINS, version="9.9.9")
    yield m
    m.close()


def serve(m: DaemonMetrics, **kw: object) -> str:
    args: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "token": None,
        "ready": lambda: True,
        "healthy": lambda: True,
    }
    args.update(kw)
    return m.serve(**args)  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of a text-format scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


def scrape(url: str) -> str:
    status, body = http_get(url)
    assert status == 200, body
    return body


def test_every_contract_metric_is_exposed_with_every_label_preinitialised(metrics: DaemonMetrics) -> None:
    text = scrape(serve(metrics))
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    for name, kind in CONTRACT.items():
        assert types.get(name) == kind, (name, types.get(name))

    got = samples(text)

    def has(name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in got

    assert has("zpd_build_info", version="9.9.9", python_version=sys.version.split()[0])
    assert all(has("zpd_phase", zpd_phase=p) for p in PHASES)
    assert value(text, "zpd_phase", zpd_phase="idle") == 1
    assert has("zpd_round") and has("zpd_round_last_success_timestamp_seconds")
    assert all(has("zpd_rounds_total", outcome=o) for o in OUTCOMES)
    for p in PHASES:
        assert has("zpd_phase_duration_seconds_bucket", phase=p, le="1.0")
        assert has("zpd_phase_duration_seconds_bucket", phase=p, le="14400.0")
        assert has("zpd_phase_duration_seconds_count", phase=p)
    assert all(has("zpd_tasks_synthesized_total", domain=d) for d in DOMAINS)
    assert all(has("zpd_frontier_difficulty", domain=d) for d in DOMAINS)
    assert all(has("zpd_tasks_routed_total", fate=f) for f in FATES)
    assert all(has("zpd_attempts_total", mode=m) for m in MODES)
    assert all(has("zpd_generated_tokens_total", role=r) for r in ROLES)
    assert all(has("zpd_failures_total", component=c) for c in COMPONENTS)
    for name in [
        "zpd_eval_accuracy_ratio",
        "zpd_exam_accuracy_ratio",
        "zpd_exam_items",
        "zpd_train_loss",
        "zpd_train_tokens_total",
    ]:
        assert has(name), name
    assert "zpd_rounds_total_total" not in text


def test_recorded_values_read_back_over_http(metrics: DaemonMetrics) -> None:
    url = serve(metrics)
    metrics.set_phase("calibrate")
    metrics.set_round(3)
    metrics.round_finished("committed", when=1_700_000_000.0)
    metrics.round_finished("failed")
    metrics.observe_phase("train", 42.0)
    metrics.tasks_synthesized("dataset", 64)
    metrics.tasks_routed("zpd", 10)
    metrics.attempts("guided", 30)
    metrics.set_eval_accuracy(0.25)
    metrics.set_exam(accuracy=0.5, items=40)
    metrics.set_frontier("arithmetic", 7.5)
    metrics.train_progress(loss=1.5, new_tokens=1000)
    metrics.train_progress(loss=1.25, new_tokens=500)
    metrics.generated_tokens("teacher", 77)
    metrics.failure("grader")

    text = scrape(url)
    assert value(text, "zpd_phase", zpd_phase="calibrate") == 1
    assert value(text, "zpd_phase", zpd_phase="idle") == 0
    assert value(text, "zpd_round") == 3
    assert value(text, "zpd_rounds_total", outcome="committed") == 1
    assert value(text, "zpd_rounds_total", outcome="failed") == 1
    assert value(text, "zpd_round_last_success_timestamp_seconds") == 1_700_000_000.0
    assert value(text, "zpd_phase_duration_seconds_bucket", phase="train", le="30.0") == 0
    assert value(text, "zpd_phase_duration_seconds_bucket", phase="train", le="60.0") == 1
    assert value(text, "zpd_phase_duration_seconds_sum", phase="train") == 42.0
    assert value(text, "zpd_tasks_synthesized_total", domain="dataset") == 64
    assert value(text, "zpd_tasks_synthesized_total", domain="arithmetic") == 0
    assert value(text, "zpd_tasks_routed_total", fate="zpd") == 10
    assert value(text, "zpd_attempts_total", mode="guided") == 30
    assert value(text, "zpd_eval_accuracy_ratio") == 0.25
    assert value(text, "zpd_exam_accuracy_ratio") == 0.5
    assert value(text, "zpd_exam_items") == 40
    assert value(text, "zpd_frontier_difficulty", domain="arithmetic") == 7.5
    assert value(text, "zpd_train_loss") == 1.25
    assert value(text, "zpd_train_tokens_total") == 1500
    assert value(text, "zpd_generated_tokens_total", role="teacher") == 77
    assert value(text, "zpd_failures_total", component="grader") == 1


def test_unknown_label_values_are_refused(metrics: DaemonMetrics) -> None:
    with pytest.raises(ValueError, match="unknown domain 'chess'"):
        metrics.tasks_synthesized("chess", 1)
    with pytest.raises(ValueError, match="unknown fate"):
        metrics.tasks_routed("graduated", 1)
    with pytest.raises(ValueError, match="unknown phase"):
        metrics.set_phase("sleeping")
    with pytest.raises(ValueError, match="unknown component"):
        metrics.failure("gpu")


def test_openmetrics_is_served_when_asked_for(metrics: DaemonMetrics) -> None:
    url = serve(metrics)
    import urllib.request

    req = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        body = resp.read().decode()
    assert body.endswith("# EOF\n")
    assert 'zpd_rounds_total{outcome="committed"} 0.0' in body


def test_healthz_and_readyz_follow_their_callables(metrics: DaemonMetrics) -> None:
    state = {"ready": False, "healthy": True}

    def broken() -> bool:
        raise RuntimeError("probe blew up")

    url = serve(metrics, ready=lambda: state["ready"], healthy=lambda: state["healthy"])
    base = url.removesuffix("/metrics")
    assert http_get(base + "/readyz")[0] == 503
    assert http_get(base + "/healthz")[0] == 200
    state.update(ready=True, healthy=False)
    assert http_get(base + "/readyz")[0] == 200
    assert http_get(base + "/healthz")[0] == 503
    assert http_get(base + "/nope")[0] == 404
    metrics.close()
    other = DaemonMetrics(DOMAINS, version="9.9.9")
    try:
        base = serve(other, healthy=broken).removesuffix("/metrics")
        assert http_get(base + "/healthz")[0] == 503
    finally:
        other.close()


def test_serve_returns_the_real_port_and_close_frees_it(metrics: DaemonMetrics) -> None:
    url = serve(metrics)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert url == f"http://127.0.0.1:{port}/metrics" and port > 0
    metrics.close()
    metrics.close()  # idempotent
    again = DaemonMetrics(DOMAINS, version="9.9.9")
    try:
        assert serve(again, port=port) == url
    finally:
        again.close()


def test_beyond_loopback_requires_a_token(metrics: DaemonMetrics) -> None:
    for host in ["0.0.0.0", "::", "192.0.2.10"]:
        with pytest.raises(ValueError, match=r"requires a bearer token in \$ZPD_METRICS_TOKEN"):
            serve(metrics, host=host)
    with pytest.raises(ValueError, match=r"\$OTHER_ENV"):
        metrics.serve("0.0.0.0", 0, None, lambda: True, lambda: True, token_env="OTHER_ENV")
    url = serve(metrics, host="localhost")  # loopback by name needs none
    assert url.startswith("http://localhost:")


def test_bearer_token_guards_every_endpoint(metrics: DaemonMetrics) -> None:
    token = "s3cret-token"
    # Bound on all interfaces (what the token is for); traffic stays on loopback.
    url = serve(metrics, host="0.0.0.0", token=token)
    port = url.rsplit(":", 1)[1].split("/")[0]
    base = f"http://127.0.0.1:{port}"
    for path in ["/metrics", "/healthz", "/readyz"]:
        status, body = http_get(base + path)
        assert status == 401 and token not in body
        assert http_get(base + path, {"Authorization": "Bearer wrong"})[0] == 401
        assert http_get(base + path, {"Authorization": token})[0] == 401
        assert http_get(base + path, {"Authorization": f"Bearer {token}"})[0] == 200


def test_port_in_use_names_host_and_port(metrics: DaemonMetrics) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            serve(metrics, port=port)


def test_promtool_check_metrics_accepts_a_live_scrape(metrics: DaemonMetrics) -> None:
    url = serve(metrics)
    metrics.set_round(1)
    metrics.observe_phase("synthesize", 3.0)
    result = promtool("check", "metrics", stdin=scrape(url))
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool prints lint findings even when it exits 0; ours must have none.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_real_prometheus_scrapes_the_daemon(metrics: DaemonMetrics, tmp_path: Path) -> None:
    url = serve(metrics)
    target = url.removeprefix("http://").removesuffix("/metrics")
    metrics.set_round(3)
    metrics.tasks_routed("zpd", 5)
    with Prometheus(tmp_path, targets=[target]) as prom:
        assert prom.wait_for_value('zpd_round{job="zpd"}', lambda v: v == 3) == 3
        assert prom.wait_for_value('up{job="zpd"}') == 1
        assert prom.wait_for_value('zpd_tasks_routed_total{fate="zpd"}') == 5
        metrics.set_round(4)
        assert prom.wait_for_value("zpd_round", lambda v: v == 4) == 4
    assert prom.proc is None


def test_real_prometheus_scrapes_with_a_bearer_token(metrics: DaemonMetrics, tmp_path: Path) -> None:
    token = "prom-token-123"
    url = serve(metrics, token=token)
    target = url.removeprefix("http://").removesuffix("/metrics")
    wrong_token = tmp_path / "wrong-token"
    wrong_token.write_text("wrong")
    metrics.set_round(7)
    wrong_job = {
        "job_name": "wrong-token",
        "authorization": {"type": "Bearer", "credentials_file": str(wrong_token)},
        "static_configs": [{"targets": [target]}],
    }
    with Prometheus(tmp_path, targets=[target], bearer_token=token, extra_scrape_configs=[wrong_job]) as prom:
        assert prom.wait_for_value('zpd_round{job="zpd"}', lambda v: v == 7) == 7
        assert prom.wait_for_value('up{job="wrong-token"}', lambda v: v == 0) == 0
        assert prom.query('zpd_round{job="wrong-token"}') == []
