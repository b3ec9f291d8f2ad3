"""The attack suite, part 3: ``zpd serve``'s HTTP server under malformed, oversized and hostile requests,
slow clients and a connection flood. Every request gets a 4xx (a flood: 200 or 503, never a reset) and
the server keeps answering. The server runs in this process on the round-0 learner, with a 1 s socket
timeout and 4 connection slots so that the slow-client and flood cases are quick."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from attack_lib import cli
from attacks_live import serve_cases


@pytest.fixture(scope="module")
def server(round0_archive: Path, tmp_path_factory: pytest.TempPathFactory):
    from zpd.trainer.openai_server import LearnerServer, ServeLimits

    state = tmp_path_factory.mktemp("serve") / "state"
    code, err = cli("start", "--config", Path(__file__).parents[1] / "configs" / "smoke.toml", "--state-dir",
                    state,
                    "--rounds", "0", "--from-snapshot", round0_archive)
    assert code == 0, err
    learner = state / "rounds" / "round_000000" / "learner"
    srv = LearnerServer(lambda: (0, learner), None,
                        limits=ServeLimits(connection_timeout_seconds=1.0, max_connections=4))
    url = srv.start("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield int(url.rsplit(":", 1)[1].split("/")[0])
    srv.shutdown()


def test_every_hostile_request_gets_a_4xx_and_the_server_keeps_serving(server: int) -> None:
    outcomes = [run() for _name, run in serve_cases(server, seed=0)]
    failed = [f"{o.case}: {o.detail}" for o in outcomes if not o.handled]
    assert len(outcomes) >= 30
    assert not failed, "\n".join(failed)
