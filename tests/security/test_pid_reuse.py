"""Issue 9, item 1: a PID recycled onto a root process must never give its identity to another uid.

The attacker (an unprivileged uid with no identity) connects to the agent, passes the connection to
another process and exits; a root process is then started with the same PID (forced through
/proc/sys/kernel/ns_last_pid). With the ``spire`` source the agent asks SPIRE by PID, so without the
guard the attacker's connection would receive the root process's SVID and private key.

* Before accept, real SPIRE: the agent process is paused (SIGSTOP) while the swap happens, so when it
  accepts the connection /proc/<pid> already is the root process. The owner of /proc/<pid> (uid 0) no
  longer matches SO_PEERCRED (the attacker's uid) and SO_PEERPIDFD shows the connecting process is
  gone: PERMISSION_DENIED and a logged security event.
* While the identity source answers: a Delegated Identity server that attests by PID (reads
  /proc/<pid>) is held until the PID has been recycled onto a root process, then answers with that
  process's SVID; the agent re-checks the caller after the answer and refuses it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc._proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as di
from spire_pqc._proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2_grpc as di_grpc
from spire_pqc._proto.spire.api.types import types_pb2
from spire_pqc.agent.caclient import LocalCAClient
from spire_pqc.agent.config import parse
from spire_pqc.agent.server import Agent
from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import fetch
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from tests.integration.spire import SpireAgent, SpireServer, cleanup, running, short_tempdir
from tests.security._support import (
    ATTACKER,
    ROOT_ID,
    TRUST_DOMAIN,
    connect_and_exit,
    connect_and_wait,
    fetch_on,
    let_exit,
    log_lines,
    public_dir,
    require_root,
    spawn_with_pid,
)

NODE = f"spiffe://{TRUST_DOMAIN}/node1"
DELEGATE = f"spiffe://{TRUST_DOMAIN}/spire-pqc/agent"
VICTIM_ARGV = ["sleep", "300"]


def _recycle(socket_path: Path, agent: AgentProcess | None) -> tuple[Any, Any] | None:
    """Attacker connects (agent paused if given), exits; a root process takes its PID. None: PID lost."""
    if agent is not None:
        agent.pause()
    try:
        conn, pid = connect_and_exit(socket_path, ATTACKER)
        victim = spawn_with_pid(pid, VICTIM_ARGV)
    finally:
        if agent is not None:
            agent.resume()
    if victim is None:
        conn.close()
        return None
    return conn, victim


def _until_served(agent: AgentProcess, spiffe_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        agent.check_running()
        try:
            served = asyncio.run(fetch(str(agent.socket_path))).get("svids", [])
        except OSError:  # the socket is not there yet
            served = []
        if spiffe_id in served:
            return
        assert time.monotonic() < deadline, f"{spiffe_id} not served:\n{agent.log_tail()}"
        time.sleep(0.5)


@pytest.mark.spire
def test_pid_recycled_before_accept_gets_nothing_from_real_spire() -> None:
    require_root()
    workdir = short_tempdir()
    os.chmod(workdir, 0o755)
    server = SpireServer(workdir)
    spire_agent = SpireAgent(workdir, server, authorized_delegates=[DELEGATE])
    try:
        with running(server, spire_agent), public_dir() as agent_dir:
            server.start()
            token = server.join_token(NODE)
            for spiffe_id in (DELEGATE, ROOT_ID):  # everything running as root gets the root-only ID
                server.cli(
                    "entry", "create", "-parentID", NODE, "-spiffeID", spiffe_id, "-selector", "unix:uid:0"
                )
            spire_agent.start(token)
            assert spire_agent.fetch_x509(workdir / "fetched").returncode == 0
            config = {
                "agent": {"socket_path": str(agent_dir / "agent.sock"), "shutdown_grace": "1s"},
                "source": {
                    "kind": "spire",
                    "spire": {
                        "admin_socket_path": str(spire_agent.admin_socket),
                        "workload_socket_path": str(spire_agent.socket),
                    },
                },
                "ca": {"address": "127.0.0.1:1", "timeout": "1s"},  # no PQC CA: the classical API suffices
            }
            agent = AgentProcess(agent_dir, config)
            # No PQC CA answers at 127.0.0.1:1, so /ready stays 503 by design (it follows the CA): wait
            # until the classical Workload API answers instead.
            agent.start(wait=False)
            try:
                # Root itself gets the root-only SVID through the agent: the guard is not a blanket refusal.
                _until_served(agent, ROOT_ID)
                outcomes = []
                for _ in range(5):
                    recycled = _recycle(agent.socket_path, agent)
                    if recycled is None:
                        continue  # another process on the machine took the PID first
                    conn, victim = recycled
                    try:
                        outcomes.append(asyncio.run(fetch_on(conn)))
                    finally:
                        victim.kill()
                        victim.wait()
                    if len(outcomes) == 2:
                        break
                assert outcomes, "could not recycle a PID onto a root process (machine too busy?)"
                for status, svids, message in outcomes:
                    assert svids == [], f"the attacker received {svids}"
                    assert status == "PERMISSION_DENIED", (status, message)
                assert log_lines(agent, "security event"), agent.log_tail()
            finally:
                agent.stop()
    finally:
        cleanup(workdir)


# --- a Delegated Identity server that attests by PID, held until the PID is recycled -------------------

TD = TrustDomain(TRUST_DOMAIN)
ROOT = SpiffeId.parse(ROOT_ID)
DER = serialization.Encoding.DER


class PidAttestingSpire(di_grpc.DelegatedIdentityServicer):
    """Answers SubscribeToX509SVIDs{pid} as SPIRE's unix attestor would: by the uid of /proc/<pid>.

    The first subscription waits on ``hold`` before attesting, so the test can recycle the PID while the
    identity source is answering.
    """

    def __init__(self, ca: DevClassicalCA) -> None:
        self.ca = ca
        self.hold = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.attested: list[tuple[int, int]] = []

    async def SubscribeToX509SVIDs(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.subscribed.set()
        await self.hold.wait()
        uid = os.stat(f"/proc/{request.pid}").st_uid
        self.attested.append((request.pid, uid))
        if uid != 0:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        cert, key = self.ca.issue_svid(ROOT)
        svid = types_pb2.X509SVID(
            cert_chain=[cert.public_bytes(DER)],
            id=types_pb2.SPIFFEID(trust_domain=TD.name, path=ROOT.path),
            expires_at=int(cert.not_valid_after_utc.timestamp()),
        )
        key_der = key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        yield di.SubscribeToX509SVIDsResponse(
            x509_svids=[di.X509SVIDWithKey(x509_svid=svid, x509_svid_key=key_der)]
        )
        await asyncio.Event().wait()

    async def SubscribeToX509Bundles(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield di.SubscribeToX509BundlesResponse(
            ca_certificates={TD.id_string(): self.ca.certificate.public_bytes(DER)}
        )
        await asyncio.Event().wait()


@pytest.mark.asyncio
async def test_pid_recycled_while_the_source_answers_is_refused_after_the_answer() -> None:
    require_root()
    with public_dir() as directory:
        hierarchy = PQCHierarchy.generate(TD)
        ca = DevClassicalCA(TD, hierarchy.intermediate.key)
        fake = PidAttestingSpire(ca)
        server = grpc.aio.server()
        di_grpc.add_DelegatedIdentityServicer_to_server(fake, server)
        server.add_insecure_port(f"unix://{directory}/admin.sock")
        await server.start()
        config = parse(
            {
                "agent": {"socket_path": str(directory / "agent.sock"), "shutdown_grace": "1s"},
                "source": {
                    "kind": "spire",
                    "spire": {
                        "admin_socket_path": str(directory / "admin.sock"),
                        "workload_socket_path": str(directory / "unused.sock"),
                    },
                },
                "ca": {"address": "127.0.0.1:1"},
            }
        )
        issuer = PQCIssuer(hierarchy.intermediate, TD, BundleSet([X509Bundle(TD, [ca.certificate])]))
        agent = Agent(config, ca_client=LocalCAClient(issuer))
        try:
            await agent.start()
            async with asyncio.timeout(30):
                while not agent.ready:
                    await asyncio.sleep(0.01)
            victim = pid = None
            for _ in range(5):
                conn, attacker = await asyncio.to_thread(connect_and_wait, agent.socket_path, ATTACKER)
                fake.subscribed.clear()
                fetch = asyncio.create_task(fetch_on(conn))
                async with asyncio.timeout(30):
                    await fake.subscribed.wait()  # the attacker was alive and asked; the source is answering
                pid = await asyncio.to_thread(let_exit, attacker)
                victim = await asyncio.to_thread(spawn_with_pid, pid, VICTIM_ARGV)
                if victim is not None:
                    break
                fake.hold.set()  # PID lost to another process: let this round end, try again
                await fetch
                fake.hold.clear()
            assert victim is not None, "could not recycle a PID onto a root process (machine too busy?)"
            try:
                fake.hold.set()  # the source now attests the root process by that PID and answers with its SVID
                status, svids, message = await fetch
            finally:
                victim.kill()
                victim.wait()
            assert fake.attested[-1] == (pid, 0)  # the source did answer with the root SVID …
            assert svids == []  # … and the agent did not pass it on
            assert status == "PERMISSION_DENIED", (status, message)
        finally:
            await agent.close()
            await server.stop(None)
