"""hybrid-echo: a server and a client talking over a `hybrid` channel with credentials from the agent.

    python echo.py server 127.0.0.1:9443
    python echo.py client 127.0.0.1:9443 "hello"

Both read SPIFFE_ENDPOINT_SOCKET (the spire-pqc agent), keep their hybrid SVID current, and accept
only peers of the trust domain example.org.
"""

from __future__ import annotations

import asyncio
import sys

from spire_pqc.workload import (
    HybridX509Source,
    SecureStreamWriter,
    TrustDomain,
    authorize_member_of,
    open_connection,
    start_server,
)

PEERS = authorize_member_of(TrustDomain.parse("example.org"))


async def serve(host: str, port: int) -> None:
    async with HybridX509Source() as source:

        async def echo(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
            data = await reader.read(1024)
            print(
                f"from {writer.peer_id()} ({writer.mode.value}, {writer.group}): {data.decode()!r}",
                flush=True,
            )
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        server = await start_server(echo, host, port, source=source, authorizer=PEERS)
        print(f"listening on {host}:{server.port} as {source.svid.spiffe_id}", flush=True)
        async with server:
            await asyncio.Event().wait()  # serve until the process is stopped


async def call(host: str, port: int, message: str) -> None:
    async with HybridX509Source() as source:
        reader, writer = await open_connection(host, port, source=source, authorizer=PEERS)
        writer.write(message.encode())
        await writer.drain()
        print(
            f"{writer.peer_id()} ({writer.mode.value}, {writer.group}) answered {(await reader.read(1024)).decode()!r}"
        )
        writer.close()
        await writer.wait_closed()


def main() -> None:
    role, address = sys.argv[1], sys.argv[2]
    host, _, port = address.rpartition(":")
    if role == "server":
        asyncio.run(serve(host, int(port)))
    else:
        asyncio.run(call(host, int(port), sys.argv[3] if len(sys.argv) > 3 else "hello"))


if __name__ == "__main__":
    main()
