"""ops/: Prometheus config and alerts (promtool), the Grafana dashboard, the systemd unit and sd_notify."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from promtools import Prometheus, http_get, promtool

from zpd.loop import notify
from zpd.loop.metrics import CONTRACT, DaemonMetrics

OPS = Path(__file__).resolve().parent.parent / "ops"
PROMETHEUS_YML = OPS / "prometheus" / "prometheus.yml"
ALERTS_YML = OPS / "prometheus" / "alerts.yml"
ALERTS_TEST_YML = OPS / "prometheus" / "alerts_test.yml"
DASHBOARD = OPS / "grafana" / "dashboards" / "zpd.json"
UNIT = OPS / "systemd" / "zpd.service"
ROWS = ["Status", "Learning", "Curriculum", "Throughput", "Reliability"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in d["annotations"]["list"] if "expr" in a]
    for v in d["templating"]["list"]:
        if v["type"] == "query":  # Grafana's label_values(<selector>, <label>): keep the PromQL part
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", v["definition"])
            assert match, v["definition"]
            exprs.append(match.group(1))
    return exprs


def zpd_names(promql: str) -> set[str]:
    return set(re.findall(r"\bzpd_\w+", promql))


def contract_name(name: str) -> str:
    """The contract family a sample name belongs to (histogram series carry a suffix)."""
    if name in CONTRACT:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and CONTRACT.get(base) == "histogram":
            return base
    raise AssertionError(f"{name} is not a contract metric")


def live_sample_names() -> set[str]:
    m = DaemonMetrics(["arithmetic"], version="0", replicas=2)  # served replicas' slots are labels too
    try:
        _, body = http_get(m.serve("127.0.0.1", 0, None, lambda: True, lambda: True))
    finally:
        m.close()
    return {line.split("{")[0].split()[0] for line in body.splitlines() if line and not line.startswith("#")}


def test_promtool_checks_the_prometheus_config_and_alert_rules() -> None:
    for args in (
        ["check", "config", str(PROMETHEUS_YML)],
        ["check", "rules", str(ALERTS_YML)],
        ["test", "rules", str(ALERTS_TEST_YML)],
    ):
        result = promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_prometheus_config_scrapes_zpd_on_loopback_with_the_alerts() -> None:
    text = PROMETHEUS_YML.read_text()
    assert re.search(r"job_name:\s*zpd\b", text)
    assert '"127.0.0.1:9464"' in text
    assert re.search(r"rule_files:\s*\n\s*-\s*alerts\.yml", text)
    assert "credentials_file" in text  # the commented bearer-token example
    alerts = ALERTS_YML.read_text()
    for name in ["ZpdDown", "ZpdNoSuccessfulRound", "ZpdFailuresRising"]:
        assert f"alert: {name}" in alerts


def test_dashboard_structure() -> None:
    d = dashboard()
    assert d["uid"] == "zpd-overview"
    assert [p["title"] for p in d["panels"] if p["type"] == "row"] == ROWS
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DATASOURCE, v["name"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE, p["title"]
    for a in d["annotations"]["list"]:
        assert a["datasource"] == DATASOURCE, a["name"]
    # Every row holds at least one panel: the panel list is in row order.
    kinds = [p["type"] == "row" for p in d["panels"]]
    assert all(not (a and b) for a, b in zip(kinds, kinds[1:], strict=False)) and not kinds[-1]


def test_dashboard_exprs_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no PromQL-only checker; a recording rule per expression is the same parser.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_alerts_use_only_contract_metrics_that_a_live_scrape_has() -> None:
    exposed = live_sample_names()
    used = set().union(*(zpd_names(e) for e in dashboard_exprs())) | zpd_names(ALERTS_YML.read_text())
    assert used, "no zpd metric found in the dashboard or alerts"
    for name in sorted(used):
        assert contract_name(name)  # raises for a name outside the contract
        assert name in exposed, f"{name} is used in ops/ but absent from a live scrape"
    for e in dashboard_exprs():
        others = set(re.findall(r"\b(?:process|python|node|go)_\w+", e))
        assert not others, f"dashboard uses non-contract metrics {others}"
    # Every contract family is on the dashboard somewhere.
    on_dashboard = {contract_name(n) for e in dashboard_exprs() for n in zpd_names(e)}
    assert on_dashboard == set(CONTRACT), set(CONTRACT) - on_dashboard


def test_grafana_provisioning_points_at_the_dashboard_and_a_prometheus() -> None:
    provider = (OPS / "grafana" / "provisioning" / "dashboards" / "zpd.yml").read_text()
    assert "apiVersion: 1" in provider and "type: file" in provider and "path:" in provider
    source = (OPS / "grafana" / "provisioning" / "datasources" / "zpd.yml").read_text()
    assert "apiVersion: 1" in source and "type: prometheus" in source


def test_systemd_unit() -> None:
    text = UNIT.read_text()
    directives = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert directives["Type"] == "notify"
    assert directives["NotifyAccess"] == "main"
    assert directives["ExecStart"] == (
        "/opt/zpd/.venv/bin/zpd start --config /etc/zpd/config.toml --state-dir /var/lib/zpd"
        " --log-format json"
    )
    assert directives["Restart"] == "on-failure" and "RestartSec" in directives
    assert directives["KillMode"] == "mixed"
    assert directives["TimeoutStopSec"] == "900"
    assert directives["WatchdogSec"] == "600"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # verify insists that ExecStart's binary exists; /opt/zpd is not installed here.
    unit = tmp_path / "zpd.service"
    unit.write_text(UNIT.read_text().replace("/opt/zpd/.venv/bin/zpd", "/bin/true"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "zpd.service" not in result.stderr, result.stderr


def test_notify_sends_datagrams_to_a_path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"
        assert notify.notify("STATUS=round 3: train")
        assert sock.recv(4096) == b"STATUS=round 3: train"


def test_notify_abstract_socket_and_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"zpd-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name + "-gone")
    assert not notify.notify("STOPPING=1")  # nobody listening: logged, not raised
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify.notify("READY=1")


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval_seconds() is None
    monkeypatch.setenv("WATCHDOG_USEC", "600000000")
    assert notify.watchdog_interval_seconds() == 300.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval_seconds() == 300.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert notify.watchdog_interval_seconds() is None


def test_dashboard_queries_run_against_a_real_prometheus(tmp_path: Path) -> None:
    m = DaemonMetrics(["arithmetic"], version="0")
    try:
        url = m.serve("127.0.0.1", 0, None, lambda: True, lambda: True)
        m.set_round(2)
        m.set_phase("train")
        m.round_finished("committed")
        m.set_frontier("arithmetic", 4.0)
        with Prometheus(tmp_path, targets=[url.removeprefix("http://").removesuffix("/metrics")]) as prom:
            prom.wait_for_value("zpd_round", lambda v: v == 2)
            for expr in dashboard_exprs():
                prom.query(expr.replace("$instance", ".*"))  # raises on any PromQL evaluation error
            assert (
                prom.query('zpd_phase{job="zpd", instance=~".*"} == 1')[0]["metric"]["zpd_phase"] == "train"
            )
            assert prom.query('time() - (zpd_round_last_success_timestamp_seconds{job="zpd"} > 0)')
    finally:
        m.close()
