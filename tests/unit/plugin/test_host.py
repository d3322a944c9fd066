"""spire_pqc.plugin.host across a real process boundary: the test plays SPIRE's part of go-plugin.

The plugin (plugin_under_test.py) runs as a child process with the environment SPIRE gives it; the test
reads the handshake line, dials the socket and makes the calls SPIRE makes, in SPIRE's order
(``spiffe/spire:pkg/common/catalog/external.go@v1.15.3``, ``hashicorp/go-plugin:grpc_broker.go@v1.8.0``),
including serving host services behind the broker.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spire_pqc._proto.plugin import (
    grpc_broker_pb2,
    grpc_broker_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
)
from spire_pqc._proto.spire.hostservice.server.identityprovider.v1 import (
    identityprovider_pb2,
    identityprovider_pb2_grpc,
)
from spire_pqc._proto.spire.plugin.server.credentialcomposer.v1 import (
    credentialcomposer_pb2,
    credentialcomposer_pb2_grpc,
)
from spire_pqc._proto.spire.plugin.types import types_pb2
from spire_pqc._proto.spire.service.common.config.v1 import config_pb2, config_pb2_grpc
from spire_pqc._proto.spire.service.private.init.v1 import init_pb2, init_pb2_grpc

PLUGIN = Path(__file__).with_name("plugin_under_test.py")
ROOT = Path(__file__).resolve().parents[3]
HANDSHAKE = re.compile(r"^1\|1\|unix\|(?P<path>/[^|]+)\|grpc\n$")
GO_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
HCLOG_LEVELS = {"trace", "debug", "info", "warn", "error"}
HOST_SERVICES = [
    "spire.hostservice.server.identityprovider.v1.IdentityProvider",
    "spire.hostservice.server.agentstore.v1.AgentStore",
    "spire.hostservice.common.metrics.v1.Metrics",
]
COMPOSER = "spire.plugin.server.credentialcomposer.v1.CredentialComposer"
CONFIG = "spire.service.common.config.v1.Config"
COOKIE = {"CredentialComposer": "CredentialComposer"}
# What go-plugin's Client.Start adds to spire-server's environment (§1.1).
GO_PLUGIN_ENV = {"PLUGIN_MIN_PORT": "10000", "PLUGIN_MAX_PORT": "25000", "PLUGIN_PROTOCOL_VERSIONS": "1"}


class PluginProcess:
    """The plugin child process, with stderr collected line by line on a thread."""

    def __init__(self, extra_env: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CredentialComposer"}
        env.update(GO_PLUGIN_ENV)
        env.update(extra_env)
        self.proc = subprocess.Popen(
            [sys.executable, str(PLUGIN)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.stdout = self.proc.stdout
        self.stderr_lines: list[bytes] = []
        self._stderr_thread = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._stderr_thread.start()

    def _drain(self, stream: Iterator[bytes]) -> None:
        for line in stream:
            self.stderr_lines.append(line)

    def read_handshake(self, timeout: float = 30.0) -> str:
        """The first stdout line, exactly as written (newline included)."""
        ready, _, _ = select.select([self.stdout], [], [], timeout)
        assert ready, f"no handshake within {timeout}s; stderr: {self.stderr_text()}"
        return self.stdout.readline().decode()

    def wait(self, timeout: float = 10.0) -> int:
        """Exit code, once the process has ended and stderr is fully read."""
        code = self.proc.wait(timeout)
        self._stderr_thread.join(timeout)
        return code

    def stderr_text(self) -> str:
        return b"".join(self.stderr_lines).decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        self.stdout.close()
        assert self.proc.stderr is not None
        self.proc.stderr.close()


class FakeIdentityProvider(identityprovider_pb2_grpc.IdentityProviderServicer):
    def FetchX509Identity(
        self, request: identityprovider_pb2.FetchX509IdentityRequest, context: grpc.ServicerContext
    ) -> identityprovider_pb2.FetchX509IdentityResponse:
        return identityprovider_pb2.FetchX509IdentityResponse(
            identity=identityprovider_pb2.X509Identity(
                cert_chain=[b"leaf", b"intermediate"], private_key=b"k"
            ),
            bundle=types_pb2.Bundle(trust_domain="example.org"),
        )


@pytest.fixture
def host_services() -> Iterator[str]:
    """SPIRE's side of the broker: host services on a Unix socket (short path, as SPIRE's temp file is)."""
    directory = tempfile.mkdtemp(prefix="hs-", dir="/tmp")
    path = f"{directory}/host.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    identityprovider_pb2_grpc.add_IdentityProviderServicer_to_server(FakeIdentityProvider(), server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    yield path
    server.stop(None).wait()
    shutil.rmtree(directory)


@pytest.fixture
def plugin() -> Iterator[PluginProcess]:
    process = PluginProcess(COOKIE)
    yield process
    process.close()


class Broker:
    """The host's StartStream: a request stream fed from a queue, kept open until closed."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._queue: queue.Queue[grpc_broker_pb2.ConnInfo | None] = queue.Queue()
        self.call = grpc_broker_pb2_grpc.GRPCBrokerStub(channel).StartStream(self._requests())

    def _requests(self) -> Iterator[grpc_broker_pb2.ConnInfo]:
        while (item := self._queue.get()) is not None:
            yield item

    def send(self, info: grpc_broker_pb2.ConnInfo) -> None:
        self._queue.put(info)

    def close(self) -> None:
        self._queue.put(None)


def connect(plugin: PluginProcess) -> tuple[grpc.Channel, Path]:
    line = plugin.read_handshake()
    match = HANDSHAKE.match(line)
    assert match, f"bad handshake line {line!r}"
    socket_path = Path(match["path"])
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel, socket_path


def test_spire_load_configure_and_unload_sequence(
    plugin: PluginProcess, host_services: str, summary: Callable[[str, str], None]
) -> None:
    channel, socket_path = connect(plugin)
    # The socket lives alone in a private directory, with a path that fits sun_path.
    assert len(os.fsencode(str(socket_path))) <= 107
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in socket_path.parent.iterdir()) == ["plugin.sock"]

    # Steps 2-4: broker stream, stdio stream, then the host-services ConnInfo for broker ID 1.
    broker = Broker(channel)
    stdio = grpc_stdio_pb2_grpc.GRPCStdioStub(channel).StreamStdio(empty_pb2.Empty())
    broker.send(grpc_broker_pb2.ConnInfo(service_id=1, network="unix", address=host_services))

    # Step 5: Init advertises the plugin's services and learns the host's.
    init = init_pb2_grpc.InitStub(channel)
    reply = init.Init(init_pb2.InitRequest(host_service_names=HOST_SERVICES), timeout=5)
    assert list(reply.plugin_service_names) == [COMPOSER, CONFIG]

    # Step 7: Configure; Validate reaches SPIRE's IdentityProvider through the brokered address.
    config = config_pb2_grpc.ConfigStub(channel)
    core = config_pb2.CoreConfiguration(trust_domain="example.org")
    config.Configure(config_pb2.ConfigureRequest(core_configuration=core, hcl_configuration=""), timeout=5)
    with pytest.raises(grpc.RpcError) as refused:
        config.Configure(
            config_pb2.ConfigureRequest(core_configuration=core, hcl_configuration="fail = true")
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    validated = config.Validate(config_pb2.ValidateRequest(core_configuration=core), timeout=10)
    assert validated.valid
    assert list(validated.notes) == ["bundle:example.org", "chain:2"]

    # Step 8: the plugin type's service is registered; unhandled calls mean "keep SPIRE's defaults".
    composer = credentialcomposer_pb2_grpc.CredentialComposerStub(channel)
    with pytest.raises(grpc.RpcError) as unimplemented:
        composer.ComposeServerX509CA(credentialcomposer_pb2.ComposeServerX509CARequest(), timeout=5)
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED

    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="plugin"), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    # Both long-lived streams are still open and have sent nothing.
    assert broker.call.is_active()
    assert stdio.is_active()

    # Step 9: Deinit, then go-plugin's Kill sends Shutdown; the process exits by itself.
    init.Deinit(init_pb2.DeinitRequest(), timeout=5)
    started = time.monotonic()
    grpc_controller_pb2_grpc.GRPCControllerStub(channel).Shutdown(grpc_controller_pb2.Empty(), timeout=5)
    assert plugin.wait(timeout=5) == 0
    elapsed = time.monotonic() - started
    # go-plugin kills the process if it has not exited 2 s after Shutdown.
    assert elapsed < 2.0
    summary("plugin host", f"Shutdown RPC to process exit: {elapsed * 1000:.0f} ms")

    # The streams ended cleanly, without a message, and the private directory is gone.
    assert list(broker.call) == []
    assert broker.call.code() == grpc.StatusCode.OK
    assert list(stdio) == []
    broker.close()
    channel.close()
    assert not socket_path.parent.exists()

    # stdout held nothing but the handshake; every stderr line is an hclog JSON entry.
    assert plugin.stdout.read() == b""
    entries = [json.loads(line) for line in plugin.stderr_lines]
    assert entries, "the plugin logged nothing"
    for entry in entries:
        for key in ("@level", "@message", "@timestamp", "@module"):
            assert isinstance(entry[key], str), (key, entry)
        assert entry["@level"] in HCLOG_LEVELS
        assert GO_TIMESTAMP.match(entry["@timestamp"]), entry["@timestamp"]
    messages = [(e["@level"], e["@message"]) for e in entries]
    assert ("info", "initialised by the plugin host") in messages
    assert ("warn", "configured for example.org") in messages
    assert ("info", "deinit") in messages
    assert ("info", "shutdown requested by the plugin host") in messages
    warned = next(e for e in entries if e["@message"] == "configured for example.org")
    assert "ValueError: an error attached to a log record" in warned["error"]
    init_entry = next(e for e in entries if e["@message"] == "initialised by the plugin host")
    assert init_entry["host_services"] == ",".join(HOST_SERVICES)
    assert init_entry["@module"] == "spire_pqc.plugin.host"


@pytest.mark.parametrize("cookie", [{}, {"CredentialComposer": "KeyManager"}])
def test_without_the_magic_cookie_the_plugin_refuses_to_run(cookie: dict[str, str]) -> None:
    process = PluginProcess(cookie)
    try:
        assert process.wait(timeout=30) == 1
        assert process.stdout.read() == b""
        assert process.stderr_text().startswith("This binary is a plugin. These are not meant to be executed")
    finally:
        process.close()


def test_sigint_is_ignored_and_sigterm_stops_cleanly(plugin: PluginProcess) -> None:
    channel, socket_path = connect(plugin)
    broker = Broker(channel)
    health = health_pb2_grpc.HealthStub(channel)
    plugin.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert plugin.proc.poll() is None
    reply = health.Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    plugin.proc.send_signal(signal.SIGTERM)
    assert plugin.wait(timeout=5) == 0
    assert list(broker.call) == []
    broker.close()
    channel.close()
    assert not socket_path.parent.exists()
    assert any(json.loads(line)["@message"] == "SIGTERM received; stopping" for line in plugin.stderr_lines)
