"""hello-world server: answers one line over a hybrid post-quantum channel (see README.md)."""

import asyncio
import os

from spire_pqc.workload import HybridX509Source, SecureStreamWriter, authorize_id, start_server

CLIENT = "spiffe://example.org/hello"  # the only peer this server accepts
PORT = int(os.environ.get("PORT", "9443"))


async def main() -> None:
    async with HybridX509Source() as source:  # the agent at SPIFFE_ENDPOINT_SOCKET

        async def hello(reader: asyncio.StreamReader, writer: SecureStreamWriter) -> None:
            writer.write(b"Hello, " + await reader.readline())
            writer.close()

        async with await start_server(
            hello, "127.0.0.1", PORT, source=source, authorizer=authorize_id(CLIENT)
        ):
            await asyncio.Event().wait()


asyncio.run(main())
