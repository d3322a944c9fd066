"""grpc.health.v1.Health on the agent socket, checked by the real `spire-agent healthcheck -socketPath`
and by grpcio; an unknown method answers UNIMPLEMENTED as grpc-go (spire-server's CLI) and grpcio read it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.spire import PqcAgent, cleanup, short_tempdir, spire_bin
from tests.integration.test_agent_processes import CLIENT_ID, _dev_agent

pytestmark = [pytest.mark.spire, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def agent() -> Iterator[PqcAgent]:
    workdir = short_tempdir()
    agent = _dev_agent(workdir, workdir / "dev-ca", CLIENT_ID, "")
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
        cleanup(workdir)


def _socket(agent: PqcAgent) -> Path:
    return agent.workdir / "agent.sock"


def test_spire_agent_healthcheck_passes_against_our_socket(agent: PqcAgent) -> None:
    result = subprocess.run(
        [str(spire_bin("spire-agent")), "healthcheck", "-socketPath", str(_socket(agent)), "-verbose"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Agent is healthy." in result.stdout


def test_spire_agent_healthcheck_fails_when_nothing_serves(tmp_path: Path) -> None:
    """The negative control: the same command against a socket nobody serves."""
    result = subprocess.run(
        [str(spire_bin("spire-agent")), "healthcheck", "-socketPath", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0


def test_grpcio_health_check_and_watch(agent: PqcAgent) -> None:
    with grpc.insecure_channel(f"unix://{_socket(agent)}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "SpiffeWorkloadAPI", "spire_pqc.workload.v1.HybridWorkload"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == serving
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == serving
        watch.cancel()


def test_unknown_method_is_unimplemented_for_grpcio(agent: PqcAgent) -> None:
    with grpc.insecure_channel(f"unix://{_socket(agent)}") as channel:
        call = channel.unary_unary("/no.such.Service/Method", None, None)
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "unknown method /no.such.Service/Method" in (info.value.details() or "")


def test_unknown_method_is_unimplemented_for_grpc_go(agent: PqcAgent) -> None:
    """spire-server's CLI (grpc-go) calling the entry API on our socket: Unimplemented, not Unknown."""
    result = subprocess.run(
        [str(spire_bin("spire-server")), "entry", "show", "-socketPath", str(_socket(agent))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "code = Unimplemented" in output, output
    assert "unknown method /spire.api.server.entry.v1.Entry/" in output, output
