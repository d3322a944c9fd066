"""The go-plugin side of a SPIRE external plugin: serve the plugin's gRPC services the way SPIRE expects.

SPIRE starts an external plugin as a child process and talks hashicorp/go-plugin to it
(``spiffe/spire:pkg/common/catalog/external.go@v1.15.3``, ``hashicorp/go-plugin:docs/guide-plugin-write-non-go.md``).
This module implements the plugin end of that protocol, in order:

1. the magic cookie ``<type>=<type>`` must be in the environment, or the process refuses to run;
2. a plaintext gRPC server on a Unix socket in a fresh private directory serves, next to the plugin's own
   services: the broker (``plugin.GRPCBroker``; records where SPIRE serves its host services), the
   controller (``plugin.GRPCController``; Shutdown), stdio (``plugin.GRPCStdio``; an idle stream), SPIRE's
   private ``Init`` service and the gRPC health service (``"plugin"`` = SERVING);
3. the handshake line ``1|1|unix|<socket>|grpc`` is the first line on stdout;
4. the process serves until the Shutdown RPC or SIGTERM, then stops cleanly. SIGINT is ignored, as in
   go-plugin, so a Ctrl-C to the process group cannot end the plugin before SPIRE calls Deinit.

Typical entry point::

    broker = HostServiceBroker()
    composer = MyComposer(host_services=broker)
    sys.exit(serve_plugin("CredentialComposer", [
        PluginService(COMPOSER_SERVICE, add_CredentialComposerServicer_to_server, composer),
        PluginService(CONFIG_SERVICE, add_ConfigServicer_to_server, composer_config),
    ], broker=broker))
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TextIO, TypeVar

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from spire_pqc._proto.plugin import (
    grpc_broker_pb2,
    grpc_broker_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
)
from spire_pqc._proto.spire.service.private.init.v1 import init_pb2, init_pb2_grpc
from spire_pqc.errors import UnavailableError

logger = logging.getLogger(__name__)

# go-plugin's CoreProtocolVersion and the only app protocol version SPIRE accepts (§1.1, "handshake line").
CORE_PROTOCOL_VERSION = 1
APP_PROTOCOL_VERSION = 1
# The broker ID on which SPIRE serves its host services (spire-plugin-sdk private/consts.go, §1.2 step 4).
HOST_SERVICES_BROKER_ID = 1
# The health service name go-plugin's Ping checks.
HEALTH_SERVICE = "plugin"
# StartStream and StreamStdio each hold a worker thread for the plugin's whole life.
LONG_LIVED_STREAMS = 2
# sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
# SPIRE dials with MaxInt32 message limits; accept the same.
_MAX_MESSAGE = 2**31 - 1
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
]

# What go-plugin prints (server.go) when a plugin binary is run by hand.
NOT_A_PLUGIN_MESSAGE = (
    "This binary is a plugin. These are not meant to be executed directly.\n"
    "Please execute the program that consumes these plugins, which will\n"
    "load any plugins automatically\n"
)

S = TypeVar("S")


@dataclass(frozen=True)
class PluginService(Generic[S]):
    """One gRPC service of the plugin: its fully qualified name (advertised by Init) and its registration."""

    name: str
    add_to_server: Callable[[S, grpc.Server], None]
    servicer: S


# --- lifetime -----------------------------------------------------------------------------------------------


class _Lifetime:
    """Wakes every long-lived stream when the plugin stops, so none holds up the server's shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._waiters: set[threading.Event] = set()

    def hold(self, context: grpc.ServicerContext) -> None:
        """Block until the RPC of ``context`` ends or the plugin stops."""
        wake = threading.Event()
        # The callback runs when the RPC terminates, e.g. the host hangs up; False: it already has.
        if not context.add_callback(wake.set):
            return
        with self._lock:
            if self._stopped:
                return
            self._waiters.add(wake)
        try:
            wake.wait()
        finally:
            with self._lock:
                self._waiters.discard(wake)

    def stop(self) -> None:
        """Release every held stream, now and in the future."""
        with self._lock:
            self._stopped = True
            for wake in self._waiters:
                wake.set()


# --- broker -------------------------------------------------------------------------------------------------


class HostServiceBroker:
    """Where SPIRE serves its host services, as announced on the broker stream, and a channel to them.

    SPIRE sends ``ConnInfo{service_id: 1, network: "unix", address: <path>}`` while it loads the plugin,
    before it calls Init (§1.2, step 4). Calls may still race with that message, so :meth:`channel` waits.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._conn: dict[int, grpc_broker_pb2.ConnInfo] = {}
        self._channel: grpc.Channel | None = None
        self._closed = False

    def record(self, info: grpc_broker_pb2.ConnInfo) -> None:
        """Remember a ConnInfo received from the host (a later one for the same ID replaces it)."""
        if info.HasField("knock") and not info.address:
            # Multiplexing knocks; SPIRE never enables multiplexing (§1.2, "Multiplexing").
            logger.debug("ignoring broker knock for service %d", info.service_id)
            return
        with self._cond:
            previous = self._conn.get(info.service_id)
            self._conn[info.service_id] = info
            if previous is not None and previous.address != info.address and self._channel is not None:
                self._channel.close()
                self._channel = None
            self._cond.notify_all()
        logger.debug("broker: service %d at %s:%s", info.service_id, info.network, info.address)

    def address(self, service_id: int = HOST_SERVICES_BROKER_ID, timeout: float = 10.0) -> tuple[str, str]:
        """``(network, address)`` of a brokered service; raises UnavailableError if none arrives in time."""
        with self._cond:
            if not self._cond.wait_for(lambda: service_id in self._conn or self._closed, timeout):
                raise UnavailableError(f"SPIRE announced no broker connection for service {service_id}")
            if self._closed:
                raise UnavailableError("the plugin is shutting down")
            info = self._conn[service_id]
            return info.network, info.address

    def channel(self, timeout: float = 10.0) -> grpc.Channel:
        """A (shared, cached) plaintext channel to SPIRE's host services; closed when the plugin stops."""
        network, address = self.address(HOST_SERVICES_BROKER_ID, timeout)
        with self._cond:
            if self._closed:
                raise UnavailableError("the plugin is shutting down")
            if self._channel is None:
                if network == "unix":
                    target = f"unix:{address}"
                elif network == "tcp":
                    target = address
                else:
                    raise UnavailableError(f"unsupported broker network {network!r} for host services")
                self._channel = grpc.insecure_channel(target, options=_GRPC_OPTIONS)
            return self._channel

    def close(self) -> None:
        """Close the host-services channel; later calls raise UnavailableError."""
        with self._cond:
            self._closed = True
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            self._cond.notify_all()


# --- go-plugin and SPIRE infrastructure services -------------------------------------------------------


class _BrokerServicer(grpc_broker_pb2_grpc.GRPCBrokerServicer):
    """Keeps the broker stream open for the plugin's whole life and records every ConnInfo.

    Answering UNIMPLEMENTED (or ending the stream) would make SPIRE's send of the host-services ConnInfo
    fail, and with it the plugin load, depending on a race (§1.2, step 4).
    """

    def __init__(self, broker: HostServiceBroker, lifetime: _Lifetime) -> None:
        self._broker = broker
        self._lifetime = lifetime

    def StartStream(
        self, request_iterator: Iterator[grpc_broker_pb2.ConnInfo], context: grpc.ServicerContext
    ) -> Iterator[grpc_broker_pb2.ConnInfo]:
        # Reading happens on its own thread, so this handler can end the stream when the plugin stops
        # even though the host never half-closes its side.
        reader = threading.Thread(
            target=self._read, args=(request_iterator,), name="go-plugin-broker", daemon=True
        )
        reader.start()
        self._lifetime.hold(context)
        return iter(())

    def _read(self, request_iterator: Iterator[grpc_broker_pb2.ConnInfo]) -> None:
        try:
            for info in request_iterator:
                self._broker.record(info)
        except grpc.RpcError:
            pass  # the stream ended (host gone or plugin stopping); nothing is lost


class _ControllerServicer(grpc_controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, request_stop: Callable[[], None]) -> None:
        self._request_stop = request_stop

    def Shutdown(
        self, request: grpc_controller_pb2.Empty, context: grpc.ServicerContext
    ) -> grpc_controller_pb2.Empty:
        # The server stops after this reply went out: stop() gives in-flight calls a grace period.
        logger.info("shutdown requested by the plugin host")
        self._request_stop()
        return grpc_controller_pb2.Empty()


class _StdioServicer(grpc_stdio_pb2_grpc.GRPCStdioServicer):
    """An idle stdio stream: the plugin logs to stderr itself, but the host expects the stream to exist."""

    def __init__(self, lifetime: _Lifetime) -> None:
        self._lifetime = lifetime

    def StreamStdio(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[grpc_stdio_pb2.StdioData]:
        self._lifetime.hold(context)
        return iter(())


class _InitServicer(init_pb2_grpc.InitServicer):
    """SPIRE's private init service: advertises the plugin's services, learns the host's (§1.2, steps 5-6)."""

    def __init__(
        self,
        plugin_service_names: Sequence[str],
        on_deinit: Callable[[], None] | None,
        on_init: Callable[[], None] | None = None,
    ) -> None:
        self._names = list(plugin_service_names)
        self._on_deinit = on_deinit
        self._on_init = on_init
        self.host_service_names: list[str] = []

    def Init(self, request: init_pb2.InitRequest, context: grpc.ServicerContext) -> init_pb2.InitResponse:
        self.host_service_names = list(request.host_service_names)
        if self._on_init is not None:
            self._on_init()
        logger.info(
            "initialised by the plugin host", extra={"host_services": ",".join(self.host_service_names)}
        )
        return init_pb2.InitResponse(plugin_service_names=self._names)

    def Deinit(
        self, request: init_pb2.DeinitRequest, context: grpc.ServicerContext
    ) -> init_pb2.DeinitResponse:
        if self._on_deinit is not None:
            self._on_deinit()
        return init_pb2.DeinitResponse()


# --- the server ---------------------------------------------------------------------------------------------


def _private_socket_path(base_dir: str | None) -> Path:
    """A socket path in a fresh 0700 directory, short enough for sun_path."""
    candidates = [base_dir] if base_dir is not None else [tempfile.gettempdir(), "/tmp"]  # noqa: S108
    for base in candidates:
        # mkdtemp's random suffix is 8 characters.
        if len(os.fsencode(os.path.join(base, "spq-XXXXXXXX", "plugin.sock"))) <= MAX_SOCKET_PATH_BYTES:
            return Path(tempfile.mkdtemp(prefix="spq-", dir=base)) / "plugin.sock"
    raise UnavailableError(f"no directory gives a Unix socket path of at most {MAX_SOCKET_PATH_BYTES} bytes")


class PluginServer:
    """The plugin's gRPC server: its own services plus go-plugin's and SPIRE's infrastructure services.

    It has no process-wide effects (no signals, no stdout); :func:`serve_plugin` adds those.
    """

    def __init__(
        self,
        plugin_type: str,
        services: Sequence[PluginService[Any]],
        *,
        broker: HostServiceBroker | None = None,
        on_deinit: Callable[[], None] | None = None,
        max_concurrent_calls: int = 8,
        socket_dir: str | None = None,
    ) -> None:
        names = [s.name for s in services]
        if not any(name.rsplit(".", 1)[-1] == plugin_type for name in names):
            # SPIRE's bindRepos would refuse it: "no supported plugin interface found" (§1.2, step 6).
            raise ValueError(f"no service of plugin type {plugin_type!r} among {names}")
        if max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be at least 1")
        self.plugin_type = plugin_type
        self.broker = broker if broker is not None else HostServiceBroker()
        self._services = list(services)
        self._socket_dir = socket_dir
        self._lifetime = _Lifetime()
        self._stop_requested = threading.Event()
        self._init = _InitServicer(names, on_deinit, on_init=self._remove_socket_directory)
        self._health = health.HealthServicer()
        self._pool = futures.ThreadPoolExecutor(
            max_workers=LONG_LIVED_STREAMS + max_concurrent_calls, thread_name_prefix="plugin-grpc"
        )
        self._server = grpc.server(self._pool, options=_GRPC_OPTIONS)
        self.socket_path: Path | None = None

    @property
    def host_service_names(self) -> list[str]:
        """Host services SPIRE offered in Init (empty before Init)."""
        return list(self._init.host_service_names)

    @property
    def handshake_line(self) -> str:
        """go-plugin's handshake line for this server (without the newline); only valid once started."""
        if self.socket_path is None:
            raise RuntimeError("the plugin server is not started")
        return f"{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{self.socket_path}|grpc"

    def start(self) -> None:
        """Register every service, bind the private socket and start serving."""
        if self.socket_path is not None:
            raise RuntimeError("the plugin server is already started")
        for service in self._services:
            service.add_to_server(service.servicer, self._server)
        grpc_broker_pb2_grpc.add_GRPCBrokerServicer_to_server(
            _BrokerServicer(self.broker, self._lifetime), self._server
        )
        grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(
            _ControllerServicer(self.request_stop), self._server
        )
        grpc_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(_StdioServicer(self._lifetime), self._server)
        init_pb2_grpc.add_InitServicer_to_server(self._init, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._health.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        socket_path = _private_socket_path(self._socket_dir)
        try:
            bound = self._server.add_insecure_port(f"unix:{socket_path}")
            if bound:
                self._server.start()
        except BaseException:
            shutil.rmtree(socket_path.parent, ignore_errors=True)
            raise
        if not bound:
            shutil.rmtree(socket_path.parent, ignore_errors=True)
            raise UnavailableError(f"cannot listen on {socket_path}")
        self.socket_path = socket_path
        logger.info("plugin %s serving on %s", self.plugin_type, socket_path)

    def _remove_socket_directory(self) -> None:
        """The host is connected (it calls Init over its one connection): the socket file and its
        directory are no longer needed, and removing them now means that a host which kills this process
        without a Shutdown (``spire-server validate`` does) leaves nothing behind in the temp directory.
        The listening socket and the host's connection are unaffected."""
        if self.socket_path is not None:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return; safe from any thread (not from a signal handler: see serve_plugin)."""
        self._stop_requested.set()

    def wait(self, poll: Callable[[], bool] | None = None, interval: float = 0.2) -> None:
        """Block until :meth:`request_stop` is called (or ``poll()`` returns true, checked every interval)."""
        while not self._stop_requested.wait(interval if poll is not None else None):
            if poll is not None and poll():
                return

    def stop(self, grace: float = 1.0) -> None:
        """End the long-lived streams, stop serving (in-flight calls get ``grace`` seconds), clean up."""
        self._lifetime.stop()
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._pool.shutdown(wait=False)
        self.broker.close()
        if self.socket_path is not None:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)
        logger.info("plugin %s stopped", self.plugin_type)


# --- the process ------------------------------------------------------------------------------------------


def serve_plugin(
    plugin_type: str,
    services: Sequence[PluginService[Any]],
    *,
    broker: HostServiceBroker | None = None,
    on_deinit: Callable[[], None] | None = None,
    max_concurrent_calls: int = 8,
    socket_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run this process as a go-plugin plugin of ``plugin_type`` until SPIRE stops it; return the exit code.

    For the plugin's entry point only (it handles signals and writes stdout): ``sys.exit(serve_plugin(...))``
    from the main thread. Returns 1 without serving when the magic cookie is missing, like go-plugin.
    """
    env = os.environ if environ is None else environ
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    # SPIRE sets the cookie key and value both to the plugin type (§1.1, "go-plugin client settings").
    if env.get(plugin_type) != plugin_type:
        err.write(NOT_A_PLUGIN_MESSAGE)
        err.flush()
        return 1
    server = PluginServer(
        plugin_type,
        services,
        broker=broker,
        on_deinit=on_deinit,
        max_concurrent_calls=max_concurrent_calls,
        socket_dir=socket_dir,
    )
    terminated = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Only a flag: taking a lock inside a signal handler could deadlock with the interrupted code.
        nonlocal terminated
        terminated = True

    in_main = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}
    if in_main:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        server.start()
        try:
            # The handshake must be the first line on stdout; the host reads exactly one line (§1.1).
            out.write(server.handshake_line + "\n")
            out.flush()
            server.wait(poll=lambda: terminated)
            if terminated:
                logger.info("SIGTERM received; stopping")
        finally:
            server.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
