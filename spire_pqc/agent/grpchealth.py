"""``grpc.health.v1.Health`` on the agent socket, and UNIMPLEMENTED for every unknown method.

``spire-agent healthcheck -socketPath <agent socket>`` (and any gRPC health client: Kubernetes' gRPC
probes, grpc_health_probe) asks ``Check`` for the overall service ``""``. Answers:

- ``""`` and ``SpiffeWorkloadAPI``: SERVING while the agent serves its socket and its identity source
  can answer callers;
- ``spire_pqc.workload.v1.HybridWorkload``: SERVING while PQC credentials are served (as ``/ready``);
- any other name: NOT_FOUND (``Watch``: SERVICE_UNKNOWN), as the health protocol says.

The messages are grpcio-health-checking's (the plugin uses them too; a second definition of the same
protobuf names in one process would collide); the service mapping is our own, for grpclib. The health
service needs no security header and attests nobody: it reveals only these three bits. The request
is read within the agent's limits like every other.

grpclib answers a method it does not know with headers lacking ``content-type``, which grpc-go
reports as Unknown; :class:`UnimplementedFallback` routes such calls to a handler whose answer is a
proper trailers-only response (``content-type: application/grpc``, ``grpc-status: 12``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

SERVICE = "grpc.health.v1.Health"
WATCH_INTERVAL = 1.0  # seconds between status checks of a Watch stream

M = TypeVar("M", bound=Message)
ReadRequest = Callable[[Stream[Any, Any], type[M]], Awaitable[M]]
Guard = Callable[
    [Callable[[Stream[Any, Any]], Awaitable[None]]], Callable[[Stream[Any, Any]], Awaitable[None]]
]


class HealthService:
    """``Check`` and ``Watch`` over ``statuses`` (service name → "serving now?")."""

    def __init__(
        self, statuses: Mapping[str, Callable[[], bool]], *, read_request: ReadRequest[Any], guard: Guard
    ) -> None:
        self._statuses = dict(statuses)
        self._read = read_request
        self._guard = guard

    def _status(self, service: str) -> int:
        probe = self._statuses.get(service)
        response = health_pb2.HealthCheckResponse
        if probe is None:
            return int(response.SERVICE_UNKNOWN)
        return int(response.SERVING if probe() else response.NOT_SERVING)

    async def check(self, stream: Stream[Any, Any]) -> None:
        request = await self._read(stream, health_pb2.HealthCheckRequest)
        status = self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {request.service!r}")
        await stream.send_message(health_pb2.HealthCheckResponse(status=status))

    async def watch(self, stream: Stream[Any, Any]) -> None:
        request = await self._read(stream, health_pb2.HealthCheckRequest)
        last = None
        while True:  # until the client goes away or the agent stops
            status = self._status(request.service)
            if status != last:
                await stream.send_message(health_pb2.HealthCheckResponse(status=status))
                last = status
            await asyncio.sleep(WATCH_INTERVAL)

    def __mapping__(self) -> dict[str, Handler]:
        base = f"/{SERVICE}/"
        return {
            base + "Check": Handler(
                self._guard(self.check), Cardinality.UNARY_UNARY,
                health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse,
            ),
            base + "Watch": Handler(
                self._guard(self.watch), Cardinality.UNARY_STREAM,
                health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse,
            ),
        }  # fmt: skip


class UnimplementedFallback(dict[str, Handler]):
    """A grpclib method mapping whose ``get`` answers UNIMPLEMENTED (properly) for unknown paths."""

    def get(self, key: str, default: Any = None) -> Any:
        handler = super().get(key)
        if handler is not None:
            return handler

        async def unimplemented(stream: Stream[Any, Any]) -> None:
            raise GRPCError(Status.UNIMPLEMENTED, f"unknown method {key[:200]}")

        return Handler(unimplemented, Cardinality.UNARY_UNARY, empty_pb2.Empty, empty_pb2.Empty)
