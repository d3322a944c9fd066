"""Intermediate PQC CA rotation with real SPIRE v1.15.3, the spire-pqc plugin and node agent, under traffic.

The plugin starts with intermediate A (in ``intermediates_dir``, past a third of its life). While a
workload streams hybrid SVIDs and a pair of workloads opens a new hybrid channel every second, the
operator issues B offline (``spire-pqc ca intermediate --out-dir DIR/b``) and drops it in: the plugin
picks it up without a restart, activates it at A's midpoint, and archives A once everything A signed
has expired (``max_x509_svid_ttl``). Short TTLs make every step happen within the test: zero
verification failures, zero failed channels, B in use after activation, A retired and archived.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from spire_pqc._internal.files import atomic_write
from spire_pqc.ca.intermediates import ARCHIVE, CERT_FILE, KEY_FILE
from spire_pqc.crypto.keys import NoEncryption
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.x509 import certs
from spire_pqc.x509.load import load_pem_certificates
from tests.conftest import Summary
from tests.integration.spire import (
    PqcAgent,
    SpireAgent,
    SpireServer,
    cleanup,
    free_port,
    running,
    short_tempdir,
)
from tests.integration.test_agent_restart_spire import TD, Workload, _entry, _pqc_agent

pytestmark = [pytest.mark.spire, pytest.mark.timeout(600)]

STREAM = textwrap.dedent(
    """
    import asyncio, json, logging, sys, time
    from cryptography import x509
    from spire_pqc.workload.source import HybridX509Source
    from spire_pqc.x509 import certs

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")

    async def main():
        source = HybridX509Source(address=sys.argv[1], retry_initial=0.05, retry_max=0.25)
        await source.start()
        while True:
            svid = source.svid  # verified by the source before it is applied
            issuer = certs.mldsa_public_key(svid.pqc_chain[1]).key_id().hex()
            bundle = source.pqc_bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
            print(json.dumps({"t": time.monotonic(), "version": source.version, "id": str(svid.spiffe_id),
                              "classical": svid.classical_chain[0].serial_number, "issuer": issuer,
                              "roots": len(bundle.authorities), "revoked": sorted(bundle.revoked),
                              "ca": svid.classical_chain[0].extensions.get_extension_for_class(
                                  x509.AuthorityKeyIdentifier).value.key_identifier.hex()}), flush=True)
            await source.wait_until_updated()

    asyncio.run(main())
    """
)
CHANNEL_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from spire_pqc.channel.api import start_server
    from spire_pqc.channel.authorize import authorize_member_of
    from spire_pqc.spiffeid import TrustDomain
    from spire_pqc.workload.source import HybridX509Source

    async def main():
        async with HybridX509Source(address=sys.argv[1], retry_initial=0.05, retry_max=0.25) as source:
            async def echo(reader, writer):
                writer.write((await reader.read(64)).upper())
                await writer.drain()
                writer.close()
            server = await start_server(echo, "127.0.0.1", int(sys.argv[2]), source=source,
                                        authorizer=authorize_member_of(TrustDomain.parse("example.org")))
            print(json.dumps({"t": time.monotonic(), "listening": True}), flush=True)
            async with server:
                await asyncio.Event().wait()

    asyncio.run(main())
    """
)
CHANNEL_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from spire_pqc.channel.api import open_connection
    from spire_pqc.channel.authorize import authorize_member_of
    from spire_pqc.spiffeid import TrustDomain
    from spire_pqc.workload.source import HybridX509Source

    async def main():
        async with HybridX509Source(address=sys.argv[1], retry_initial=0.05, retry_max=0.25) as source:
            while True:
                started = time.monotonic()
                try:
                    reader, writer = await open_connection("127.0.0.1", int(sys.argv[2]), source=source,
                        authorizer=authorize_member_of(TrustDomain.parse("example.org")))
                    writer.write(b"ping")
                    await writer.drain()
                    ok = (await reader.read(64)) == b"PING"
                    writer.close()
                    await writer.wait_closed()
                    error = None if ok else "bad echo"
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                print(json.dumps({"t": started, "version": 0, "id": "", "ok": error is None, "error": error}),
                      flush=True)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    asyncio.run(main())
    """
)

# Every 0.5 s: a hybrid JWT-SVID for audience "a" (FetchHybridJWTSVID; "ok" once fetched), then
# ValidateHybridJWTSVID of it and of the last token of every earlier PQC JWT key that has not expired
# yet ("validated" key ids; "refused": key id -> the agent's answer, that token is dropped); beside it,
# every push of FetchPQCJWTBundles (the key ids it lists).
JWT = textwrap.dedent(
    """
    import asyncio, base64, json, sys, time
    from grpclib.client import Channel
    from grpclib.const import Cardinality
    from grpclib.exceptions import GRPCError
    from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy

    BASE = "/spire_pqc.workload.v1.HybridWorkload/"
    HEADER = {"workload.spiffe.io": "true"}

    def part(token, index):
        segment = token.split(".")[index]
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))

    async def unary(channel, method, request, reply_type):
        async with channel.request(BASE + method, Cardinality.UNARY_UNARY, type(request), reply_type,
                                   metadata=HEADER, timeout=30) as stream:
            await stream.send_message(request, end=True)
            return await stream.recv_message()

    async def bundles(channel):
        while True:
            try:
                async with channel.request(BASE + "FetchPQCJWTBundles", Cardinality.UNARY_STREAM,
                                           hy.PQCJWTBundlesRequest, hy.PQCJWTBundlesResponse,
                                           metadata=HEADER) as stream:
                    await stream.send_message(hy.PQCJWTBundlesRequest(), end=True)
                    async for message in stream:
                        kids = sorted(k["kid"] for v in message.bundles.values() for k in json.loads(v)["keys"])
                        print(json.dumps({"t": time.monotonic(), "bundle": kids}), flush=True)
            except GRPCError:
                await asyncio.sleep(0.5)  # not served yet (no PQC credentials at the agent yet)

    async def main():
        channel = Channel(path=sys.argv[1].removeprefix("unix://"))
        watcher = asyncio.create_task(bundles(channel))
        held = {}  # PQC kid -> its last token (classical, pqc, exp)
        while True:
            started = time.monotonic()
            line = {"t": started, "kid": None, "ok": False, "error": None, "validated": [], "refused": {}}
            try:
                reply = await unary(channel, "FetchHybridJWTSVID", hy.HybridJWTSVIDRequest(audience=["a"]),
                                    hy.HybridJWTSVIDResponse)
                svid = reply.svids[0]
                line["kid"] = part(svid.pqc, 0)["kid"]
                held[line["kid"]] = (svid.classical, svid.pqc, part(svid.classical, 1)["exp"])
                line["ok"] = True
                for kid, (classical, pqc, exp) in list(held.items()):
                    if exp <= time.time() + 2:  # about to expire: not a fair check any more
                        del held[kid]
                        continue
                    request = hy.ValidateHybridJWTSVIDRequest(audience="a", classical=classical, pqc=pqc)
                    try:
                        await unary(channel, "ValidateHybridJWTSVID", request, hy.ValidateHybridJWTSVIDResponse)
                        line["validated"].append(kid)
                    except GRPCError as exc:
                        line["refused"][kid] = exc.message
                        del held[kid]
            except GRPCError as exc:
                line["error"] = f"{exc.status.name}: {exc.message}"
            except Exception as exc:
                line["error"] = f"{type(exc).__name__}: {exc}"
            print(json.dumps(line), flush=True)
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))

    asyncio.run(main())
    """
)


@dataclass
class Script(Workload):
    """A workload running one of the scripts above, with extra arguments after the socket."""

    args: tuple[str, ...] = ()

    def start(self, socket: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.script, f"unix://{socket}", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, group=self.gid, extra_groups=[],
        )  # fmt: skip
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self.readers:
            reader.start()


def _tokens(jwt: Script) -> list[dict[str, Any]]:
    """The JWT workload's fetch lines (not its bundle pushes)."""
    return [line for line in jwt.lines if "kid" in line]


async def _jwt_entry(server: SpireServer, node: str, jwt: Script) -> None:
    """The JWT workload's entry: 20 s X509-SVIDs, 30 s JWT-SVIDs (a token expires long before the
    intermediate whose signer signed it)."""
    await asyncio.to_thread(
        server.cli, "entry", "create", "-parentID", node, "-spiffeID", jwt.spiffe_id,
        "-x509SVIDTTL", "20", "-jwtSVIDTTL", "30", "-selector", "unix:uid:0", "-selector", f"unix:gid:{jwt.gid}",
    )  # fmt: skip


def _intermediate(root_dir: Path, out: Path, *, not_before: dt.datetime, life: dt.timedelta) -> str:
    """An intermediate under the test's PQC root with a chosen validity (as `ca intermediate` writes it)."""
    root_key = MLDSA65PrivateKey.from_pem((root_dir / "root.key.pem").read_bytes())
    (root,) = load_pem_certificates((root_dir / "root.crt.pem").read_bytes(), what="root")
    key = MLDSA65PrivateKey.generate()
    cert = certs.build_intermediate(
        root, root_key, key.public_key(), TD, not_before=not_before, not_after=not_before + life
    )
    pem = serialization.Encoding.PEM
    atomic_write(out / KEY_FILE, key.pem(NoEncryption()))
    atomic_write(out / CERT_FILE, cert.public_bytes(pem) + root.public_bytes(pem), mode=0o644)
    return key.public_key().key_id().hex()


def _ca_status(plugin_data: Path) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", "ca", "status", "--plugin-data", str(plugin_data),
         "--trust-domain", TD, "--json"],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    return {i["key_id"]: i["state"] for i in json.loads(out.stdout)["intermediates"]}


async def _until(condition: object, what: str, timeout: float) -> float:
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.asyncio
async def test_intermediate_rotation_under_streaming_and_channel_traffic(summary: Summary) -> None:
    workdir = short_tempdir()
    node = f"spiffe://{TD}/node1"
    delegate = f"spiffe://{TD}/spire-pqc/agent"
    endpoint_port = free_port()
    channel_port = free_port()
    root_dir = workdir / "pqc-root"
    subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", "ca", "init", "--trust-domain", TD, "--out-dir", str(root_dir),
         "--no-encryption"],
        check=True, capture_output=True,
    )  # fmt: skip
    intermediates = workdir / "intermediates"
    intermediates.mkdir(mode=0o700)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # A has lived a third of its 150 s: it activates B at its midpoint, about 25 s from now.
    a_id = _intermediate(root_dir, intermediates / "a", not_before=now - dt.timedelta(seconds=50),
                         life=dt.timedelta(seconds=150))  # fmt: skip
    server = SpireServer(
        workdir,
        composer_data={
            "pqc_bundle_path": str(root_dir / "root.crt.pem"),
            "intermediates_dir": str(intermediates),
            "intermediate_activation": 0.5,
            "max_x509_svid_ttl": "20s",
            "intermediates_poll_interval": "1s",
            "endpoint_listen_address": f"127.0.0.1:{endpoint_port}",
            "authorized_agents": [delegate],
        },
        composer_data_file=True,
    )
    spire_agent = SpireAgent(workdir / "node1", server, authorized_delegates=[delegate])
    agent: PqcAgent = _pqc_agent(workdir / "pqc", spire_agent, delegate, endpoint_port)
    stream = Script("stream", 50101, STREAM)
    channel_server = Script("echo", 50102, CHANNEL_SERVER, args=(str(channel_port),))
    channel_client = Script("caller", 50103, CHANNEL_CLIENT, args=(str(channel_port),))
    jwt = Script("jwt", 50104, JWT)
    workloads = [stream, channel_server, channel_client, jwt]

    try:
        with running(server, spire_agent, agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, node)
            await _entry(server, node, delegate, ["unix:uid:0", "unix:gid:0"], 3600)
            for w in (stream, channel_server, channel_client):  # 20 s SVIDs: SPIRE rotates them every ~10 s
                await _entry(server, node, w.spiffe_id, ["unix:uid:0", f"unix:gid:{w.gid}"], 20)
            await _jwt_entry(server, node, jwt)
            await asyncio.to_thread(spire_agent.start, token)
            await asyncio.to_thread(agent.start)
            socket = workdir / "pqc" / "pqc.sock"
            for w in workloads:
                w.start(socket)
            first = await stream.update_after(0, timeout=120)
            assert first["issuer"] == a_id
            await channel_server.update_after(0, timeout=120)
            await _until(lambda: any(line["ok"] for line in channel_client.lines), "a first channel", 60)
            await _until(lambda: any(line["ok"] for line in _tokens(jwt)), "a first hybrid JWT-SVID", 60)
            channels_before = len(channel_client.lines)

            # The operator issues B offline and drops it in: no restart, no reconfiguration.
            subprocess.run(
                [sys.executable, "-m", "spire_pqc.cli", "ca", "intermediate", "--trust-domain", TD, "--root-dir",
                 str(root_dir), "--out-dir", str(intermediates / "b"), "--days", "1", "--no-encryption"],
                check=True, capture_output=True,
            )  # fmt: skip
            b_id = load_pem_certificates((intermediates / "b" / CERT_FILE).read_bytes(), what="B")[0]
            b_key_id = certs.mldsa_public_key(b_id).key_id().hex()
            states = _ca_status(server.plugin_data_path)
            assert states[b_key_id] in ("next", "active")
            in_use = await _until(
                lambda: any(line["issuer"] == b_key_id for line in stream.lines), "B in use", 120
            )
            assert _ca_status(server.plugin_data_path)[b_key_id] == "active"
            # A retires once what it signed expired (max_x509_svid_ttl after B's activation): archived.
            retired = await _until((intermediates / ARCHIVE).exists, "A archived", 120)
            (archived,) = (intermediates / ARCHIVE).iterdir()
            assert archived.name.startswith("a-") and (archived / KEY_FILE).stat().st_mode & 0o077 == 0
            assert not (intermediates / "a").exists()
            await asyncio.sleep(3)  # a few more channels after the retirement
            ready = next(i for i, line in enumerate(channel_client.lines) if line["ok"])
            channels = channel_client.lines[ready:]  # from the first channel on (the server was up)
            failed = [line["error"] for line in channels if not line["ok"]]
            assert not failed, failed[:3]
            assert len(channel_client.lines) - channels_before >= 10
            rejected = [line for line in stream.stderr if "does not verify" in line]
            assert not rejected, rejected[:3]
            assert agent.metric("spire_pqc_agent_pqc_issuance_total", result="failure") == 0

            # Hybrid JWT-SVIDs through the rotation: from the first one on, every fetch and every
            # validation (the fresh token and the last one of each earlier key still valid) succeeded;
            # B's JWT key was pushed to the workload before a token carried it, and signs after it.
            ready = next(i for i, line in enumerate(_tokens(jwt)) if line["ok"])
            fetched = _tokens(jwt)[ready:]
            failed = [
                line["error"] or line["refused"] for line in fetched if not line["ok"] or line["refused"]
            ]
            assert not failed, failed[:3]
            a_kid = fetched[0]["kid"]
            kids = list(dict.fromkeys(line["kid"] for line in fetched))
            assert len(kids) == 2 and kids[0] == a_kid, kids  # A's signer, then B's: nothing else
            b_kid = kids[1]
            assert all(line["kid"] == b_kid for line in fetched[fetched.index(
                next(line for line in fetched if line["kid"] == b_kid)):])  # fmt: skip
            b_signs = next(line["t"] for line in fetched if line["kid"] == b_kid)
            pushes = [line for line in jwt.lines if "bundle" in line]
            b_pushed = next(line["t"] for line in pushes if b_kid in line["bundle"])
            assert b_pushed < b_signs, (b_pushed, b_signs)
            retiring = [line for line in fetched if line["t"] > b_signs and a_kid in line["validated"]]
            assert retiring, "no token of A's key was validated after B started signing"
            validations = sum(len(line["validated"]) for line in fetched)
            summary(
                "intermediate rotation (real SPIRE)",
                f"B picked up and in use {in_use:.1f}s after it was dropped in, A archived {retired:.1f}s later; "
                f"{len(channels)} hybrid channels (1/s) from the first one on, 0 failed; "
                f"{len(stream.lines)} stream updates, 0 verification failures; hybrid JWT-SVIDs: "
                f"{len(fetched)} fetched, {validations} validations, 0 failed; B's JWT key pushed to the "
                f"workload {b_signs - b_pushed:.1f}s before it signed, A's tokens validated "
                f"{retiring[-1]['t'] - b_signs:.1f}s into B's activation",
            )
    finally:
        for w in workloads:
            w.stop()
        cleanup(workdir)


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "spire_pqc.cli", *args], check=True, capture_output=True)


@pytest.mark.asyncio
async def test_root_rotation_then_revocation_under_traffic(summary: Summary) -> None:
    """A second PQC root reaches every workload before an intermediate under it signs (0 failures
    through the root rotation); then the intermediate under the old root is revoked: workloads hold the
    revocation within one bundle refresh, refuse what it signed, and have new credentials (measured)."""
    workdir = short_tempdir()
    node = f"spiffe://{TD}/node1"
    delegate = f"spiffe://{TD}/spire-pqc/agent"
    endpoint_port = free_port()
    channel_port = free_port()
    old_root, new_root = workdir / "pqc-root-1", workdir / "pqc-root-2"
    _cli("ca", "init", "--trust-domain", TD, "--out-dir", str(old_root), "--no-encryption")
    bundle_file = workdir / "pqc-bundle.pem"
    bundle_file.write_bytes((old_root / "root.crt.pem").read_bytes())
    intermediates = workdir / "intermediates"
    intermediates.mkdir(mode=0o700)
    _cli("ca", "intermediate", "--trust-domain", TD, "--root-dir", str(old_root),
         "--out-dir", str(intermediates / "a"), "--days", "1", "--no-encryption")  # fmt: skip
    a_id = (
        certs.mldsa_public_key(
            load_pem_certificates((intermediates / "a" / CERT_FILE).read_bytes(), what="A")[0]
        )
        .key_id()
        .hex()
    )
    composer: dict[str, object] = {
        "pqc_bundle_path": str(bundle_file),
        "intermediates_dir": str(intermediates),
        "max_x509_svid_ttl": "20s",
        "intermediates_poll_interval": "1s",
        "endpoint_listen_address": f"127.0.0.1:{endpoint_port}",
        "authorized_agents": [delegate],
    }
    server = SpireServer(workdir, composer_data=composer, composer_data_file=True)
    spire_agent = SpireAgent(workdir / "node1", server, authorized_delegates=[delegate])
    refresh = 2.0
    agent: PqcAgent = _pqc_agent(workdir / "pqc", spire_agent, delegate, endpoint_port)
    agent.config = agent.config.replace(
        'retry_max = "1s"', f'retry_max = "1s"\nbundle_refresh_interval = "{refresh:g}s"'
    )
    stream = Script("stream", 50111, STREAM)
    channel_server = Script("echo", 50112, CHANNEL_SERVER, args=(str(channel_port),))
    channel_client = Script("caller", 50113, CHANNEL_CLIENT, args=(str(channel_port),))
    jwt = Script("jwt", 50114, JWT)
    workloads = [stream, channel_server, channel_client, jwt]
    try:
        with running(server, spire_agent, agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, node)
            await _entry(server, node, delegate, ["unix:uid:0", "unix:gid:0"], 3600)
            for w in (stream, channel_server, channel_client):
                await _entry(server, node, w.spiffe_id, ["unix:uid:0", f"unix:gid:{w.gid}"], 20)
            await _jwt_entry(server, node, jwt)
            await asyncio.to_thread(spire_agent.start, token)
            await asyncio.to_thread(agent.start)
            socket = workdir / "pqc" / "pqc.sock"
            for w in workloads:
                w.start(socket)
            first = await stream.update_after(0, timeout=120)
            assert first["issuer"] == a_id and first["roots"] == 1
            await channel_server.update_after(0, timeout=120)
            await _until(lambda: any(line["ok"] for line in channel_client.lines), "a first channel", 60)
            await _until(lambda: any(line["ok"] for line in _tokens(jwt)), "a first hybrid JWT-SVID", 60)
            channels_before = len(channel_client.lines)

            # 1. Root rotation: R2 is appended to the bundle file (no reload); every workload holds it
            #    before the intermediate under it signs.
            _cli("ca", "init", "--trust-domain", TD, "--out-dir", str(new_root), "--no-encryption")

            staged = bundle_file.with_suffix(".new")
            staged.write_bytes(bundle_file.read_bytes() + (new_root / "root.crt.pem").read_bytes())
            staged.replace(bundle_file)
            two_roots = await _until(lambda: stream.lines[-1]["roots"] == 2, "R2 at the workload", 60)
            activate = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
            _cli("ca", "intermediate", "--trust-domain", TD, "--root-dir", str(new_root), "--out-dir",
                 str(intermediates / "b"), "--days", "1", "--no-encryption",
                 "--activate-at", activate.isoformat())  # fmt: skip
            b_id = (
                certs.mldsa_public_key(
                    load_pem_certificates((intermediates / "b" / CERT_FILE).read_bytes(), what="B")[0]
                )
                .key_id()
                .hex()
            )
            await _until(lambda: stream.lines[-1]["issuer"] == b_id, "credentials under R2", 120)
            await _until(lambda: len({line["kid"] for line in _tokens(jwt) if line["ok"]}) == 2,
                         "B's JWT key (under R2) signing", 60)  # fmt: skip
            await asyncio.sleep(3)
            rotation_channels = channel_client.lines[channels_before:]
            failed = [line["error"] for line in rotation_channels if not line["ok"]]
            assert not failed, failed[:3]
            assert not [line for line in stream.stderr if "does not verify" in line]
            ready = next(i for i, line in enumerate(_tokens(jwt)) if line["ok"])
            through_rotation = _tokens(jwt)[ready:]
            failed = [
                line["error"] or line["refused"]
                for line in through_rotation
                if not line["ok"] or line["refused"]
            ]
            assert not failed, failed[:3]  # B's JWT key chains to R2: the agent held R2 before it signed
            a_kid, b_kid = dict.fromkeys(line["kid"] for line in through_rotation)

            # 2. Revocation: C (under R2) takes over from B at once, and B is revoked while workloads
            #    still hold credentials B signed (their classical SVIDs last 20 s).
            _cli("ca", "intermediate", "--trust-domain", TD, "--root-dir", str(new_root), "--out-dir",
                 str(intermediates / "c"), "--days", "1", "--no-encryption",
                 "--activate-at", dt.datetime.now(dt.UTC).isoformat())  # fmt: skip
            c_id = (
                certs.mldsa_public_key(
                    load_pem_certificates((intermediates / "c" / CERT_FILE).read_bytes(), what="C")[0]
                )
                .key_id()
                .hex()
            )
            on_b = stream.lines[-1]["issuer"] == b_id  # workloads still on credentials B signed?
            before_revocation = len(channel_client.lines)
            server.write_plugin_data({**composer, "revoked_intermediates": [b_id]})
            server.reload()
            revoked_at = time.monotonic()
            held = await _until(
                lambda: b_id in stream.lines[-1]["revoked"], "the revocation at the workload", 60
            )
            # Every workload's credentials are re-issued away from B (measured): SPIRE re-signs the
            # classical SVIDs B bound at their rotation (or at once after a taint, docs/runbooks.md).
            await _until(
                lambda: (
                    stream.lines[-1]["issuer"] == c_id
                    and agent.metric("spire_pqc_agent_pqc_revoked_identities") == 0
                    and channel_client.lines[-1]["ok"]
                ),
                "every workload re-issued",
                60,
            )
            reissued = time.monotonic() - revoked_at
            since = next(i for i, line in enumerate(stream.lines) if b_id in line["revoked"])
            assert all(b_id in line["revoked"] for line in stream.lines[since:])  # never forgotten
            statuses = _ca_status(server.plugin_data_path)
            assert statuses[b_id] == "revoked" and statuses[c_id] == "active"
            revocation_failures = [x for x in channel_client.lines[before_revocation:] if not x["ok"]]

            # Hybrid JWT-SVIDs: the last token B's signer made is refused as revoked (naming its key),
            # B's key leaves the bundle pushed to the workload, C's key signs.
            await _until(
                lambda: any(b_kid in line["refused"] for line in _tokens(jwt)), "B's token refused", 60
            )
            refusal = next(line["refused"][b_kid] for line in _tokens(jwt) if b_kid in line["refused"])
            assert refusal.startswith("revoked") and b_kid in refusal and b_id[:16] in refusal, refusal
            await _until(lambda: b_kid not in [x for x in jwt.lines if "bundle" in x][-1]["bundle"],
                         "B's JWT key withdrawn from the workload's bundle", 60)  # fmt: skip
            c_kid = next(line["kid"] for line in reversed(_tokens(jwt)) if line["ok"])
            assert c_kid not in (a_kid, b_kid)
            await _until(lambda: any(c_kid in x["bundle"] for x in jwt.lines if "bundle" in x),
                         "C's JWT key at the workload", 60)  # fmt: skip
            summary(
                "root rotation and revocation (real SPIRE)",
                f"R2 at the workload {two_roots:.1f}s after it was added to the bundle file (refresh {refresh:g}s); "
                f"{len(rotation_channels)} hybrid channels through the root rotation, 0 failed; B revoked: held by "
                f"the workload {held:.1f}s after SIGUSR1, every workload on C {reissued:.1f}s after the revocation "
                f"(20 s SVIDs; the streaming workload was {'' if on_b else 'no longer '}on B's credentials when it "
                f"was revoked); {len(revocation_failures)} of {len(channel_client.lines) - before_revocation} "
                "channels failed meanwhile (refused: signed by the revoked intermediate); hybrid JWT-SVIDs: "
                f"{len(through_rotation)} fetched through the root rotation, 0 failed; B's last token refused "
                "as revoked, B's key withdrawn, C's key signing",
            )
    finally:
        for w in workloads:
            w.stop()
        cleanup(workdir)


@pytest.mark.asyncio
async def test_spire_x509_authority_rotation_under_traffic(summary: Summary) -> None:
    """SPIRE rotates its own X.509 CA (prepare, activate, then taint the old one so every agent
    re-fetches every SVID at once): bindings, PQC issuance and verification go on, with the classical
    bundle changing under the agent and the SDK — zero failed channels, zero rejected updates."""
    workdir = short_tempdir()
    node = f"spiffe://{TD}/node1"
    delegate = f"spiffe://{TD}/spire-pqc/agent"
    endpoint_port = free_port()
    channel_port = free_port()
    root_dir = workdir / "pqc-root"
    _cli("ca", "init", "--trust-domain", TD, "--out-dir", str(root_dir), "--no-encryption")
    intermediates = workdir / "intermediates"
    intermediates.mkdir(mode=0o700)
    _cli("ca", "intermediate", "--trust-domain", TD, "--root-dir", str(root_dir),
         "--out-dir", str(intermediates / "a"), "--days", "1", "--no-encryption")  # fmt: skip
    server = SpireServer(
        workdir,
        composer_data={
            "pqc_bundle_path": str(root_dir / "root.crt.pem"),
            "intermediates_dir": str(intermediates),
            "endpoint_listen_address": f"127.0.0.1:{endpoint_port}",
            "authorized_agents": [delegate],
        },
    )
    spire_agent = SpireAgent(workdir / "node1", server, authorized_delegates=[delegate])
    agent: PqcAgent = _pqc_agent(workdir / "pqc", spire_agent, delegate, endpoint_port)
    stream = Script("stream", 50121, STREAM)
    channel_server = Script("echo", 50122, CHANNEL_SERVER, args=(str(channel_port),))
    channel_client = Script("caller", 50123, CHANNEL_CLIENT, args=(str(channel_port),))
    workloads = [stream, channel_server, channel_client]

    async def authorities() -> dict[str, Any]:
        out = await asyncio.to_thread(server.cli, "localauthority", "x509", "show", "-output", "json")
        return dict(json.loads(out.stdout))

    try:
        with running(server, spire_agent, agent):
            await asyncio.to_thread(server.start)
            token = await asyncio.to_thread(server.join_token, node)
            await _entry(server, node, delegate, ["unix:uid:0", "unix:gid:0"], 3600)
            for w in workloads:  # long SVIDs: only SPIRE's CA rotation makes them change
                await _entry(server, node, w.spiffe_id, ["unix:uid:0", f"unix:gid:{w.gid}"], 600)
            await asyncio.to_thread(spire_agent.start, token)
            await asyncio.to_thread(agent.start)
            socket = workdir / "pqc" / "pqc.sock"
            for w in workloads:
                w.start(socket)
            first = await stream.update_after(0, timeout=120)
            await channel_server.update_after(0, timeout=120)
            await _until(lambda: any(line["ok"] for line in channel_client.lines), "a first channel", 60)
            before = len(channel_client.lines)
            old = (await authorities())["active"]["authority_id"]

            await asyncio.to_thread(server.cli, "localauthority", "x509", "prepare")
            prepared = (await authorities())["prepared"]["authority_id"]
            await asyncio.sleep(8)  # the prepared CA's certificate reaches the bundles first
            await asyncio.to_thread(
                server.cli, "localauthority", "x509", "activate", "-authorityID", prepared
            )
            await asyncio.sleep(3)

            await asyncio.to_thread(server.cli, "localauthority", "x509", "taint", "-authorityID", old)
            moved = await _until(
                lambda: stream.lines[-1]["ca"] != first["ca"], "SVIDs from SPIRE's new CA", 120
            )
            await asyncio.sleep(5)  # channels after every workload moved
            channels = channel_client.lines[before:]
            failed = [line["error"] for line in channels if not line["ok"]]
            assert not failed, failed[:3]
            assert not [line for line in stream.stderr if "does not verify" in line]
            assert agent.metric("spire_pqc_agent_pqc_issuance_total", result="duplicate") == 0
            assert stream.lines[-1]["issuer"] == first["issuer"]  # PQC side unchanged: same intermediate
            summary(
                "SPIRE X.509 CA rotation (real SPIRE)",
                f"prepare/activate/taint: the streaming workload had a hybrid SVID from the new SPIRE CA "
                f"{moved:.1f}s after the taint (prepared {prepared[:8]}, old {old[:8]}); "
                f"{len(channels)} hybrid channels across the rotation, 0 failed",
            )

    finally:
        for w in workloads:
            w.stop()
        cleanup(workdir)
