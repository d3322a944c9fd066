"""hello-world client: one line over a hybrid post-quantum channel (see README.md)."""

import asyncio
import os

from spire_pqc.workload import HybridX509Source, authorize_id, open_connection

SERVER = "spiffe://example.org/hello"  # the only peer this client talks to
PORT = int(os.environ.get("PORT", "9443"))


async def main() -> None:
    async with HybridX509Source() as source:  # the agent at SPIFFE_ENDPOINT_SOCKET
        reader, writer = await open_connection(
            "127.0.0.1", PORT, source=source, authorizer=authorize_id(SERVER)
        )
        writer.write(b"post-quantum world\n")
        print((await reader.read()).decode(), end="")


asyncio.run(main())
