"""The daemon's Prometheus metrics and its /metrics, /healthz, /readyz server.

Every metric lives on a private ``CollectorRegistry`` owned by one ``DaemonMetrics`` (no globals, so
tests build as many as they like). The names, types and labels below are the contract in DESIGN.md
("Metrics"); ``CONTRACT`` lists them as exposed, and ``ops/`` (alerts, dashboard) uses nothing else.
Every label value is pre-initialised, so a series exists at 0 before its first event.

Recording helpers reject label values outside the pre-initialised sets with ``ValueError``: an unknown
value would silently create a new series that no dashboard or alert knows about.

Serving (``serve``) is a stdlib ``ThreadingHTTPServer`` in a daemon thread. It binds loopback by default;
any other address requires a bearer token, which is then checked on every endpoint (and never logged)::

    m = DaemonMetrics(["arithmetic"], version="0.1.0")
    url = m.serve("127.0.0.1", 0, token=None, ready=lambda: True, healthy=lambda: True)
    m.set_phase("synthesize"); m.tasks_synthesized("arithmetic", 64)
    m.close()
"""

from __future__ import annotations

import gzip
import hmac
import ipaddress
import logging
import platform
import socket
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted

from zpd.configs import vocabulary

from .replica_metrics import ReplicaMetrics

log = logging.getLogger(__name__)

PHASES = list(vocabulary.DAEMON_PHASES)
FATES = list(vocabulary.FATES)
MODES = ["solo", "guided"]
ROLES = ["learner", "teacher"]
COMPONENTS = ["trainer", "generator", "grader", "store", "teacher"]
OUTCOMES = ["committed", "failed", "aborted"]

# Phases run from seconds (a tiny CPU round) to hours (verl on a cluster): 1 s .. 4 h.
PHASE_BUCKETS_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)

# The contract as exposed: name -> Prometheus type (the `# TYPE` line of the text format).
CONTRACT: dict[str, str] = {
    "zpd_build_info": "gauge",
    "zpd_phase": "gauge",
    "zpd_round": "gauge",
    "zpd_rounds_total": "counter",
    "zpd_round_last_success_timestamp_seconds": "gauge",
    "zpd_phase_duration_seconds": "histogram",
    "zpd_tasks_synthesized_total": "counter",
    "zpd_tasks_routed_total": "counter",
    "zpd_attempts_total": "counter",
    "zpd_eval_accuracy_ratio": "gauge",
    "zpd_exam_accuracy_ratio": "gauge",
    "zpd_exam_items": "gauge",
    "zpd_frontier_difficulty": "gauge",
    "zpd_train_loss": "gauge",
    "zpd_train_tokens_total": "counter",
    "zpd_generated_tokens_total": "counter",
    "zpd_failures_total": "counter",
    # Beyond DESIGN's list (issue 18): the replicas of generation.backend = "served", by replica slot.
    "zpd_replicas_up": "gauge",
    "zpd_replica_requests_in_flight": "gauge",
    "zpd_replica_generated_tokens_total": "counter",
}

DEFAULT_TOKEN_ENV = "ZPD_METRICS_TOKEN"


def _check(kind: str, value: str, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {allowed}")
    return value


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1)."""
    if host in ("", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class DaemonMetrics(ReplicaMetrics):
    """All of the daemon's metrics on one private registry, plus the HTTP server that exposes them."""

    def __init__(self, domains: list[str], version: str, *, replicas: int = 0) -> None:
        """``replicas``: served replica slots to pre-initialise ("0".."replicas-1"; more as pools grow)."""
        if not domains:
            raise ValueError("DaemonMetrics needs at least one domain")
        self.domains = list(domains)
        self.registry = CollectorRegistry()
        r = self.registry
        # Standard process_* (start time, RSS, CPU, fds) and python_info; not part of the contract.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        self._build = Info("zpd_build", "zpd version and Python runtime of this daemon.", registry=r)
        self._build.info({"version": version, "python_version": platform.python_version()})
        self._phase = Enum("zpd_phase", "Phase the daemon is in now.", states=PHASES, registry=r)
        self._phase.state("idle")
        self._round = Gauge("zpd_round", "Round being worked on.", registry=r)
        self._rounds = Counter("zpd_rounds", "Rounds finished, by outcome.", ["outcome"], registry=r)
        self._last_success = Gauge(
            "zpd_round_last_success_timestamp_seconds",
            "Unix time the last round was committed (0: none since this daemon started, unless seeded).",
            registry=r,
        )
        self._phase_duration = Histogram(
            "zpd_phase_duration_seconds",
            "Wall time of each finished phase.",
            ["phase"],
            buckets=PHASE_BUCKETS_SECONDS,
            registry=r,
        )
        self._synthesized = Counter(
            "zpd_tasks_synthesized", "Candidate tasks made, by domain.", ["domain"], registry=r
        )
        self._routed = Counter(
            "zpd_tasks_routed", "Tasks given a fate by calibration, by fate.", ["fate"], registry=r
        )
        self._attempts = Counter("zpd_attempts", "Graded attempts, by mode.", ["mode"], registry=r)
        self._eval_accuracy = Gauge(
            "zpd_eval_accuracy_ratio", "Current learner's accuracy on the frozen eval set (0..1).", registry=r
        )
        self._exam_accuracy = Gauge(
            "zpd_exam_accuracy_ratio", "Current learner's accuracy on the current exam (0..1).", registry=r
        )
        self._exam_items = Gauge("zpd_exam_items", "Items in the current exam version.", registry=r)
        self._frontier = Gauge(
            "zpd_frontier_difficulty",
            "Difficulty at which the learner's solo pass rate crosses 0.5, by domain.",
            ["domain"],
            registry=r,
        )
        self._train_loss = Gauge("zpd_train_loss", "Last training loss reported by the trainer.", registry=r)
        self._train_tokens = Counter("zpd_train_tokens", "Tokens trained on.", registry=r)
        self._generated = Counter("zpd_generated_tokens", "Tokens generated, by role.", ["role"], registry=r)
        self._failures = Counter("zpd_failures", "Failures, by component.", ["component"], registry=r)
        # Extra beyond the contract (ops.md: checkpoints fill disks).
        self._disk_free = Gauge(
            "zpd_disk_free_bytes", "Free bytes on the state directory's filesystem.", registry=r
        )
        # Extras beyond the contract (issue 6): AgentFrontier's yield and the cost of an accepted item.
        self._yield = Gauge("zpd_zpd_yield_ratio",
                            "Last round's ZPD yield: in-band (zpd + exam) tasks / tasks calibrated.",
                            registry=r)
        self._accepted_cost = Gauge("zpd_accepted_item_cost_usd",
                                    "Last round's teacher spend per accepted (in-band) task, in USD.",
                                    registry=r)
        # Extra (issue 17): per-domain yield, what the candidate allocation follows (reasoning-gym families).
        self._domain_yield = Gauge("zpd_domain_yield_ratio", "Last committed round's ZPD yield by domain: "
                                   "(zpd + exam) / tasks calibrated.", ["domain"], registry=r)

        for outcome in OUTCOMES:
            self._rounds.labels(outcome)
        for phase in PHASES:
            self._phase_duration.labels(phase)
        for domain in self.domains:
            self._synthesized.labels(domain)
            self._frontier.labels(domain)
            self._domain_yield.labels(domain)
        for fate in FATES:
            self._routed.labels(fate)
        for mode in MODES:
            self._attempts.labels(mode)
        for role in ROLES:
            self._generated.labels(role)
        for component in COMPONENTS:
            self._failures.labels(component)
        self._init_replica_metrics(r, replicas)  # loop/replica_metrics.py

        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- recording -------------------------------------------------------------------------------

    def set_phase(self, phase: str) -> None:
        self._phase.state(_check("phase", phase, PHASES))

    def set_round(self, n: int) -> None:
        self._round.set(n)

    def round_finished(self, outcome: str, when: float | None = None) -> None:
        """Count a finished round; a committed one also sets the last-success time (``when``, default now)."""
        self._rounds.labels(_check("outcome", outcome, OUTCOMES)).inc()
        if outcome == "committed":
            self.set_last_success(when)

    def set_last_success(self, when: float | None = None) -> None:
        """Set the last-success time without counting a round: at start-up, seed it with the last committed
        round's ``created_at`` so a restart does not look like a daemon that never succeeded."""
        if when is None:
            self._last_success.set_to_current_time()
        else:
            self._last_success.set(when)

    def observe_phase(self, phase: str, seconds: float) -> None:
        self._phase_duration.labels(_check("phase", phase, PHASES)).observe(seconds)

    def tasks_synthesized(self, domain: str, n: int) -> None:
        self._synthesized.labels(_check("domain", domain, self.domains)).inc(n)

    def tasks_routed(self, fate: str, n: int) -> None:
        self._routed.labels(_check("fate", fate, FATES)).inc(n)

    def attempts(self, mode: str, n: int) -> None:
        self._attempts.labels(_check("mode", mode, MODES)).inc(n)

    def set_eval_accuracy(self, x: float) -> None:
        self._eval_accuracy.set(x)

    def set_exam(self, accuracy: float, items: int) -> None:
        self._exam_accuracy.set(accuracy)
        self._exam_items.set(items)

    def set_frontier(self, domain: str, x: float) -> None:
        self._frontier.labels(_check("domain", domain, self.domains)).set(x)

    def set_domain_yield(self, domain: str, ratio: float) -> None:
        self._domain_yield.labels(_check("domain", domain, self.domains)).set(ratio)

    def train_progress(self, loss: float, new_tokens: int) -> None:
        """``loss``: the latest value; ``new_tokens``: tokens trained since the previous call (not a
        total)."""
        self._train_loss.set(loss)
        self._train_tokens.inc(new_tokens)

    def generated_tokens(self, role: str, n: int) -> None:
        self._generated.labels(_check("role", role, ROLES)).inc(n)

    def failure(self, component: str) -> None:
        self._failures.labels(_check("component", component, COMPONENTS)).inc()

    def set_disk_free(self, free_bytes: int) -> None:
        self._disk_free.set(free_bytes)

    def set_yield(self, ratio: float | None, cost_usd: float | None) -> None:
        """Last round's yield and cost per accepted item (None: nothing calibrated / accepted; left as is)."""
        if ratio is not None:
            self._yield.set(ratio)
        if cost_usd is not None:
            self._accepted_cost.set(cost_usd)

    # ---- serving ---------------------------------------------------------------------------------

    def serve(
        self,
        host: str,
        port: int,
        token: str | None,
        ready: Callable[[], bool],
        healthy: Callable[[], bool],
        *,
        token_env: str = DEFAULT_TOKEN_ENV,
    ) -> str:
        """Serve /metrics, /healthz and /readyz from a daemon thread; return the real /metrics URL.

        ``port`` 0 picks a free port. A non-loopback ``host`` without ``token`` raises ``ValueError``;
        a port that cannot be bound raises ``OSError`` naming ``host:port``.
        """
        if self._server is not None:
            raise RuntimeError("metrics server already running")
        if token is not None and not token:
            raise ValueError(f"the bearer token in ${token_env} is empty")
        if token is None and not is_loopback(host):
            raise ValueError(
                f"metrics.host {host!r} is not a loopback address and requires a bearer token in ${token_env}"
            )
        server_cls = _server_class(host)
        handler = _handler_class(self.registry, token, ready, healthy)
        try:
            server = server_cls((host, port), handler)
        except OSError as e:
            raise OSError(e.errno, f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="zpd-metrics", daemon=True
        )
        self._thread.start()
        real_port = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{real_port}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent). The registry stays readable."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    family = socket.AF_INET
    try:
        family = socket.getaddrinfo(host or None, 0, proto=socket.IPPROTO_TCP)[0][0]
    except socket.gaierror:
        pass  # let bind() report the bad host with its own message

    class _Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    return _Server


def _handler_class(
    registry: CollectorRegistry,
    token: str | None,
    ready: Callable[[], bool],
    healthy: Callable[[], bool],
) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {token}".encode() if token is not None else None

    def probe(check: Callable[[], bool]) -> bool:
        try:
            return bool(check())
        except Exception:  # a failing probe is an unhealthy answer, never a crashed server thread
            log.exception("metrics probe failed")
            return False

    class _Handler(BaseHTTPRequestHandler):
        server_version = "zpd-metrics"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            if expected is not None:
                given = self.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    self._send(
                        401,
                        b"unauthorized\n",
                        "text/plain; charset=utf-8",
                        {"WWW-Authenticate": 'Bearer realm="zpd"'},
                    )
                    return
            path = urlsplit(self.path).path
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(registry)
                extra = {}
                if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                    body = gzip.compress(body)
                    extra["Content-Encoding"] = "gzip"
                self._send(200, body, content_type, extra)
            elif path in ("/healthz", "/readyz"):
                ok = probe(healthy if path == "/healthz" else ready)
                self._send(200 if ok else 503, b"ok\n" if ok else b"not ok\n", "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain; charset=utf-8")

        def _send(
            self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
            # Request lines never carry the token (it is a header), but scrapes every few seconds are
            # noise; keep them at debug.
            log.debug("metrics %s %s", self.address_string(), format % args)

    return _Handler
