"""`spire-pqc doctor`: check a node or a SPIRE server's spire-pqc set-up and say how to fix what fails.

Checks (each ``ok``, ``fail`` with its fix, or ``skip`` when nothing to check was given):

- the post-quantum backend and a known-answer self-test (ML-DSA-65 and ML-KEM-768 keys from fixed
  seeds must give the public keys both backends give, then sign/verify and encaps/decaps round trips);
- the liboqs and OpenSSL versions;
- ``--server-conf``: the spire-pqc CredentialComposer's ``plugin_data`` in a SPIRE ``server.conf``,
  validated exactly as the plugin does when SPIRE loads it (files, key modes, chain, every key);
- ``--agent-config``: the node agent's configuration, its state directory's mode and its key files'
  modes and owner (each file owned by the state directory's owner: the user the agent runs as);
- clock skew against the PQC CA, as the running agent measured it at its last PQC bundle poll (the CA
  sends its clock in ``FetchPQCBundleResponse.server_time_unix_ms``; read from the agent's ``/status``):
  more than :data:`MAX_CLOCK_SKEW` seconds fails;
- the agent socket (``--socket`` or the configuration's): ``grpc.health.v1.Health/Check``;
- the PQC CA endpoint (``--ca HOST:PORT`` or the configuration's ``ca`` addresses): TCP reachable and
  a TLS 1.3 handshake offering only X25519MLKEM768 negotiates it.

Human output by default, ``--json`` for tools; the exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import select
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spire_pqc.errors import SpirePqcError

# SHA-256 of the public keys of ML-DSA-65 from seed 00..1f and ML-KEM-768 from seed 00..3f, as both
# backends (OpenSSL 3.5 and liboqs 0.16.0, independent implementations) compute them.
KAT_MLDSA65 = "d666806e11cee19a7c989f7445f90dd419cf4d2d51db8c0fdb4c0f0a542238c9"
KAT_MLKEM768 = "0b7934c83125c788995e2ba6bd761e33046b3e40571be53e023309a29f398cc9"
TIMEOUT = 10.0
# Seconds of clock skew against the PQC CA that fail the check: well inside the CA's freshness_window
# (60 s by default: issue requests further off are refused as stale), and about what SPIRE backdates a new
# SVID's notBefore by (10 s), so a node this far behind may see fresh credentials as not yet valid.
MAX_CLOCK_SKEW = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | fail | skip
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("doctor", help="check the set-up and print the fix for each failure")
    parser.add_argument("--agent-config", type=Path, help="node agent configuration (TOML)")
    parser.add_argument("--server-conf", type=Path, help="SPIRE server.conf with the spire-pqc plugin")
    parser.add_argument("--socket", type=Path, help="agent socket (default: the agent configuration's)")
    parser.add_argument("--ca", help="PQC CA endpoint HOST:PORT (default: the agent configuration's)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=cmd_doctor)


# --- checks ---------------------------------------------------------------------------------------


def check_backend() -> Iterator[Check]:
    from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
    from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
    from spire_pqc.crypto.status import backend_info

    try:
        info = backend_info(probe_liboqs=True)
        dsa = MLDSA65PrivateKey.from_seed(bytes(range(32)))
        kem = MLKEM768PrivateKey.from_seed(bytes(range(64)))
        problems = []
        if hashlib.sha256(dsa.public_key().raw()).hexdigest() != KAT_MLDSA65:
            problems.append("ML-DSA-65 key generation from a fixed seed gives the wrong public key")
        if hashlib.sha256(kem.public_key().raw()).hexdigest() != KAT_MLKEM768:
            problems.append("ML-KEM-768 key generation from a fixed seed gives the wrong public key")
        dsa.public_key().verify(dsa.sign(b"doctor", context=b"spire-pqc/doctor"), b"doctor",
                                context=b"spire-pqc/doctor")  # fmt: skip
        secret, ciphertext = kem.public_key().encapsulate()
        if kem.decapsulate(ciphertext) != secret:
            problems.append("ML-KEM-768 decapsulation does not recover the encapsulated secret")
    except SpirePqcError as exc:
        yield fail("backend", str(exc), "install OpenSSL >= 3.5 (the cryptography wheel) or set "
                   "SPIRE_PQC_BACKEND=liboqs with liboqs 0.16.0 (docs/crypto-backends.md)")  # fmt: skip
        return
    if problems:
        yield fail("backend", f"{info.backend} {info.version}: " + "; ".join(problems),
                   "do not use this backend: reinstall it, or switch with SPIRE_PQC_BACKEND")  # fmt: skip
        return
    yield ok("backend", f"{info.backend} {info.version}: known-answer self-test passed")
    liboqs = f"liboqs {info.liboqs} ({info.liboqs_path})" if info.liboqs else "liboqs not found"
    yield ok("versions", f"cryptography {info.cryptography} with {info.cryptography_openssl}; {liboqs}")


def check_server_conf(path: Path) -> Iterator[Check]:
    from spire_pqc.config.formats import parse_hcl
    from spire_pqc.plugin.config import build_config

    name = f"plugin configuration ({path})"
    try:
        document = parse_hcl(path.read_text(), source=str(path))
    except (OSError, SpirePqcError) as exc:
        yield fail(name, f"cannot read: {exc}", "give the server.conf spire-server runs with")
        return
    trust_domain = str(document.get("server", {}).get("trust_domain", ""))
    composers = document.get("plugins", {}).get("CredentialComposer", {})
    plugins = {n: c for n, c in composers.items() if "spire-pqc" in str(c.get("plugin_cmd", ""))
               or "spire_pqc" in n or "spire-pqc" in n}  # fmt: skip
    if not plugins:
        yield fail(name, "no CredentialComposer plugin of spire-pqc in plugins { }",
                   'add CredentialComposer "spire_pqc" { plugin_cmd = …, plugin_data { … } } '
                   "(plugins/spire-pqc-composer/server.conf)")  # fmt: skip
        return
    for plugin_name, plugin in plugins.items():
        data_file = plugin.get("plugin_data_file")
        try:
            hcl = Path(data_file).read_text() if data_file else json.dumps(plugin.get("plugin_data", {}))
            config = build_config(trust_domain, hcl)
        except OSError as exc:
            yield fail(name, f"plugin_data_file {data_file}: {exc.strerror}", "create it or fix the path")
            continue
        except SpirePqcError as exc:
            problems = getattr(exc, "problems", [str(exc)])
            yield fail(name, f'CredentialComposer "{plugin_name}": ' + "; ".join(problems),
                       "fix each key named (docs/configuration.md); then: spire-server validate -config "
                       f"{path}")  # fmt: skip
            continue
        key, endpoint = config.intermediate_key_path, config.endpoint_listen_address or "off"
        mode = oct(stat.S_IMODE(key.stat().st_mode))
        yield ok(name, f'CredentialComposer "{plugin_name}": valid; intermediate key {key} (mode {mode}), '
                 f"endpoint {endpoint}")  # fmt: skip


def _mode_problem(path: Path, allowed: int) -> str | None:
    st = path.stat()
    extra = stat.S_IMODE(st.st_mode) & ~allowed
    if extra:
        return f"{path}: mode {oct(stat.S_IMODE(st.st_mode))} (group/other have {oct(extra)})"
    return None


def _owner_problem(path: Path, owner: int) -> str | None:
    uid = path.stat().st_uid
    if uid != owner:
        return f"{path}: owned by uid {uid}, not by the state directory's owner (uid {owner})"
    return None


def check_state_dir(state_dir: Path) -> Iterator[Check]:
    name = f"key files ({state_dir})"
    if not state_dir.exists():
        yield ok(name, "state directory not created yet (the agent creates it, mode 0700)")
        return
    try:
        # The agent runs as the directory's owner: every key file is its own, readable by it alone.
        owner = state_dir.stat().st_uid
        modes = [p for p in [_mode_problem(state_dir, 0o700)] if p]
        owners = []
        for entry in sorted(state_dir.rglob("*")):
            if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
                continue
            problem = _mode_problem(entry, 0o600 if entry.is_file() else 0o700)
            if problem:
                modes.append(problem)
            problem = _owner_problem(entry, owner)
            if problem:
                owners.append(problem)
    except OSError as exc:
        yield fail(name, f"cannot read: {exc.strerror} ({exc.filename})", "run spire-pqc doctor as the "
                   "user the agent runs as (root)")  # fmt: skip
        return
    fixes = []
    if modes:
        fixes.append(f"chmod 700 {state_dir} and chmod 600 the files in it (the agent writes them so; "
                     "someone changed them)")  # fmt: skip
    if owners:
        fixes.append(f"chown -R --reference={state_dir} {state_dir} (as root; the agent, running as the "
                     "directory's owner, cannot use a key file another user owns)")  # fmt: skip
    if fixes:
        yield fail(name, "; ".join(modes + owners), "; ".join(fixes))
    else:
        yield ok(name, f"directory 0700, key files 0600, all owned by uid {owner} (the directory's owner)")


def _agent_status(address: tuple[str, int]) -> dict[str, Any]:
    """The running agent's status document (``/status``); OSError or ValueError when unreadable."""
    import urllib.request

    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=TIMEOUT) as reply:
        document = json.loads(reply.read())
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - one error type for "unreadable"
    return document


def check_clock_skew(address: tuple[str, int]) -> Iterator[Check]:
    """This node's clock against the PQC CA's, as the running agent measured it at its last bundle poll."""
    name = "clock skew against the PQC CA"
    where = f"http://{address[0]}:{address[1]}/status"
    try:
        ca = _agent_status(address).get("ca")
    except (OSError, ValueError) as exc:
        yield fail(name, f"cannot read the agent's status at {where}: {exc}", "start the agent (the "
                   "skew is measured by it, at every answer of the PQC CA) or fix health.listen_address")  # fmt: skip
        return
    if not isinstance(ca, dict):
        yield fail(name, f"{where} has no PQC CA state (an agent older than this doctor)",
                   "upgrade the agent to this spire-pqc version")  # fmt: skip
        return
    skew, ca_address = ca.get("clock_skew_seconds"), ca.get("address")
    if skew is None:
        if ca.get("last_error"):
            yield fail(name, f"not measured: the PQC CA at {ca_address} has not answered the agent "
                       f"(last error: {ca['last_error']})", "see the PQC CA endpoint check: the agent must "
                       "reach the plugin's endpoint_listen_address, and be in its authorized_agents")  # fmt: skip
        else:
            yield skip(name, f"not measured yet: the PQC CA at {ca_address} has not answered a bundle poll "
                       "(or it is older than spire-pqc's server_time_unix_ms)")  # fmt: skip
        return
    measured = f"measured by the agent at {ca.get('last_success')}"
    if abs(float(skew)) > MAX_CLOCK_SKEW:
        direction = "ahead of" if skew > 0 else "behind"
        yield fail(name, f"the PQC CA at {ca_address} is {abs(skew):.1f}s {direction} this node "
                   f"(more than {MAX_CLOCK_SKEW:g}s; {measured})", "synchronise the clocks of this node and "
                   "of the spire-server host with NTP (timedatectl set-ntp true, or chronyd): issue requests "
                   "outside the CA's freshness_window are refused as stale, and fresh SVIDs may not be valid "
                   "yet here")  # fmt: skip
        return
    yield ok(name, f"{float(skew):+.3f}s against the PQC CA at {ca_address} ({measured}; limit "
             f"{MAX_CLOCK_SKEW:g}s)")  # fmt: skip


def check_socket(path: Path) -> Iterator[Check]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    name = f"agent socket (unix://{path})"
    if not path.exists():
        yield fail(name, "no such socket", "start the agent (systemctl start spire-pqc-agent) or fix "
                   "agent.socket_path")  # fmt: skip
        return
    try:
        with grpc.insecure_channel(f"unix://{path}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
    except grpc.RpcError as exc:
        yield fail(name, f"health check failed: {exc.code().name}: {exc.details()}",
                   "check that the process serving it is spire-pqc agent, and its log")  # fmt: skip
        return
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        yield fail(name, f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}",
                   "the agent's identity source cannot answer: check the SPIRE agent (admin socket) "
                   "and the agent's log")  # fmt: skip
        return
    yield ok(name, "grpc.health.v1 SERVING")


def check_ca(address: str) -> Iterator[Check]:
    from OpenSSL import SSL

    from spire_pqc.channel.context import HYBRID_GROUP, base_context, classify_handshake_error
    from spire_pqc.config.fields import parse_address

    name = f"PQC CA endpoint ({address})"
    try:
        host, port = parse_address(address)
    except (ValueError, SpirePqcError) as exc:
        yield fail(
            name, f"not a host:port: {exc}", "set ca.addresses to the plugin's endpoint_listen_address"
        )
        return
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        sock.setblocking(False)
    except OSError as exc:
        yield fail(name, f"cannot connect to {host}:{port}: {exc.strerror or exc}",
                   "check that spire-server runs with endpoint_listen_address set, that the address and "
                   "port match, and that no firewall drops them")  # fmt: skip
        return
    try:
        conn = SSL.Connection(base_context(), sock)
        conn.set_tlsext_host_name(host.encode())
        conn.set_connect_state()
        _drive(conn.do_handshake, sock)
        group = conn.get_group_name()
        elapsed = (time.monotonic() - started) * 1000
        mutual = _requires_client_certificate(conn, sock)
    except TimeoutError:
        yield fail(name, f"no TLS answer from {host}:{port} within {TIMEOUT:g}s", "check that the address is "
                   "the plugin's endpoint_listen_address and that spire-server is not overloaded")  # fmt: skip
        return
    except SSL.Error as exc:
        group = conn.get_group_name()
        if isinstance(exc, SSL.SysCallError) and group == HYBRID_GROUP:
            # The server closed on us at the end of the handshake: it wanted a client certificate.
            elapsed = (time.monotonic() - started) * 1000
            yield ok(
                name, f"reachable, TLS 1.3 with {group} in {elapsed:.0f} ms, requires a client X509-SVID"
            )
            return
        reason = classify_handshake_error(exc, server_side=False)
        yield fail(name, f"TLS 1.3 handshake with {HYBRID_GROUP} failed: {reason}",
                   "the address may not be the PQC CA endpoint (it is the plugin's endpoint_listen_address, "
                   "not spire-server's bind_port), or its TLS stack lacks X25519MLKEM768")  # fmt: skip
        return
    finally:
        sock.close()
    if group != HYBRID_GROUP:
        yield fail(name, f"negotiated {group}, not {HYBRID_GROUP}", "upgrade the endpoint's OpenSSL/grpcio")
        return
    if not mutual:
        yield fail(name, f"TLS 1.3 with {group}, but it does not require a client X509-SVID: not the PQC CA "
                   "endpoint", "use the plugin's endpoint_listen_address (spire-server's own bind_port also "
                   "speaks TLS 1.3 with X25519MLKEM768)")  # fmt: skip
        return
    yield ok(name, f"reachable, TLS 1.3 with {group} in {elapsed:.0f} ms, requires a client X509-SVID")


def _drive(call: Callable[[], Any], sock: socket.socket, timeout: float = TIMEOUT) -> Any:
    """Run a pyOpenSSL call on a non-blocking socket until it completes (TimeoutError after ``timeout``)."""
    from OpenSSL import SSL

    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (SSL.WantReadError, SSL.WantWriteError):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                raise TimeoutError from None


def _requires_client_certificate(conn: Any, sock: socket.socket) -> bool:
    """After a handshake without a client certificate: did the server refuse it (TLS 1.3 sends the
    alert after the handshake), as the PQC CA endpoint does? A server that does not need one (an
    HTTP/2 server such as spire-server's bind_port) sends its SETTINGS or nothing instead."""
    from OpenSSL import SSL

    try:
        _drive(lambda: conn.recv(64), sock, timeout=3.0)
    except SSL.SysCallError:
        return True  # closed on us (grpcio: no alert, just the end of the connection)
    except SSL.Error as exc:
        return "certificate required" in str(exc)
    except (TimeoutError, OSError):  # the server waits for us
        return False
    return False


def check_agent_config(path: Path, args: argparse.Namespace) -> Iterator[Check]:
    from spire_pqc.agent.config import load

    name = f"agent configuration ({path})"
    try:
        config = load(path)
    except SpirePqcError as exc:
        problems = getattr(exc, "problems", [str(exc)])
        yield fail(name, "; ".join(problems), f"fix each key named; then: spire-pqc agent validate -c {path}")
        return
    yield ok(name, "valid")
    if config.state_dir is not None:
        yield from check_state_dir(config.state_dir)
    if config.health_address is not None:
        yield from check_clock_skew(config.health_address)
    else:
        yield skip("clock skew against the PQC CA", "the agent has no health.listen_address: the skew it "
                   "measures is read from its /status")  # fmt: skip
    if args.socket is None:
        yield from check_socket(config.socket_path)
    if args.ca is None and config.ca is not None:
        for address in config.ca.addresses:
            yield from check_ca(address)


def run_checks(args: argparse.Namespace) -> list[Check]:
    checks: list[Check] = list(check_backend())
    steps: list[tuple[Any, Callable[..., Iterator[Check]], tuple[Any, ...]]] = [
        (args.server_conf, check_server_conf, (args.server_conf,)),
        (args.agent_config, check_agent_config, (args.agent_config, args)),
        (args.socket, check_socket, (args.socket,)),
        (args.ca, check_ca, (args.ca,)),
    ]
    for given, check, arguments in steps:
        if given is not None:
            checks.extend(check(*arguments))
    if not any((args.server_conf, args.agent_config, args.socket, args.ca)):
        checks.append(skip("set-up", "give --agent-config, --server-conf, --socket or --ca to check more"))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args)
    failed = [c for c in checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{c.status.upper():<5} {c.name}: {c.detail}")
            if c.fix:
                print(f"      fix: {c.fix}")
        print(f"{len(failed)} problem(s)" if failed else "no problems found", file=sys.stderr)
    return 1 if failed else 0
