"""Issue 9, item 3: local users flooding the agent with connections.

* Two unprivileged uids each try to hold thousands of idle connections (replacing the ones the agent
  closes), and one of them as many on the loopback health port. The agent, started with a soft
  RLIMIT_NOFILE of 1024 under a hard limit of 4096, raises the soft limit to the hard one, keeps
  each uid at its connection cap, and root is still served (FetchX509SVID and /ready) while the
  flood goes on.
* When the descriptor table does fill up (a limit lower than what the uids may hold), accept errors
  are logged at most once per interval, without a traceback, and counted.
* A connection that sends no request is closed after the idle timeout; an open stream is not idle.
"""

from __future__ import annotations

import asyncio
import time
from subprocess import Popen

from grpclib.client import Channel
from grpclib.const import Cardinality
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import wire
from spire_pqc.bench.agentproc import AgentProcess
from spire_pqc.bench.hostile import fetch, result_of, spawn
from tests.security._support import (
    ATTACKER,
    ATTACKER2,
    HEADER,
    ROOT_ID,
    assert_no_traceback,
    dev_agent_config,
    log_lines,
    public_dir,
    require_root,
    wait_for,
)

PER_UID_CAP = 256  # the default of limits.max_connections_per_uid


def _attackers(agent: AgentProcess, count: int, hold: float, *, health: bool = False) -> list[Popen[str]]:
    args = ["--count", str(count), "--hold", str(hold), "--reconnect"]
    attackers = [
        spawn("idle", ["--socket", str(agent.socket_path), *args], uid=uid) for uid in (ATTACKER, ATTACKER2)
    ]
    if health:  # and the loopback health port, which any local user can reach too
        attackers.append(spawn("idle", ["--tcp", f"127.0.0.1:{agent.health_port}", *args], uid=ATTACKER))
    return attackers


def test_two_flooding_uids_do_not_starve_root() -> None:
    require_root()
    with public_dir() as directory:
        agent = AgentProcess(directory, dev_agent_config(directory), nofile=(1024, 4096))
        with agent:
            assert agent.nofile_limits() == (4096, 4096)  # soft raised to hard at start
            attackers = _attackers(agent, count=2500, hold=20, health=True)
            try:
                # Wait until both uids are at their cap, then root must still be served, repeatedly.
                wait_for(lambda: agent.metric("spire_pqc_agent_connections") >= 2 * PER_UID_CAP - 8,
                         "the attackers to reach their caps")  # fmt: skip
                held = []
                for _ in range(3):
                    started = time.monotonic()
                    try:
                        result = asyncio.run(asyncio.wait_for(fetch(str(agent.socket_path)), 20))
                    except Exception as exc:
                        raise AssertionError(f"root not served: {exc!r}\n{agent.log_tail()}") from exc
                    assert result == {"status": "OK", "svids": [ROOT_ID]}, (result, agent.log_tail())
                    # The health port answers during the flood. Right after root's first fetch its PQC
                    # credentials may still be in issuance (so /ready is 503 until they exist): wait.
                    wait_for(
                        lambda: agent.http("/ready", timeout=20)[0] == 200, "/ready during the flood", 20
                    )
                    assert time.monotonic() - started < 20
                    held.append(agent.metric("spire_pqc_agent_connections"))
                    # The caps, plus connections accepted but not yet refused (a few accept batches).
                    assert agent.open_fds() < 2 * PER_UID_CAP + 300, agent.open_fds()
                assert max(held) <= 2 * PER_UID_CAP + 2, held  # the two uids at their caps (+ root's probe)
            finally:
                results = [result_of(a) for a in attackers]
            for result in results:
                assert result["attempts"] > 2 * PER_UID_CAP, result  # they kept trying all along
            assert (
                agent.metric("spire_pqc_agent_connections_closed_total", reason="health_per_uid_cap") >= 1000
            )
            # Thousands of connections beyond the caps were refused, each one counted.
            refused = agent.metric("spire_pqc_agent_connections_closed_total", reason="per_uid_cap")
            assert refused >= 1000, (refused, results)
            assert len(log_lines(agent, "connection cap")) <= 6  # rate-limited: ~1 per uid per 10 s
            assert_no_traceback(agent)


def test_accept_errors_are_logged_once_per_interval_and_counted() -> None:
    require_root()
    with public_dir() as directory:
        # 256 descriptors in all, while two uids may hold 256 connections each: accept() fails (EMFILE).
        agent = AgentProcess(directory, dev_agent_config(directory), nofile=(256, 256))
        with agent:
            attackers = _attackers(agent, count=220, hold=12)
            for attacker in attackers:
                result_of(attacker)
            wait_for(lambda: agent.http("/ready")[0] == 200, "the agent to answer again")
            assert agent.metric("spire_pqc_agent_accept_errors_total") >= 1
            lines = log_lines(agent, "accept")
            assert 1 <= len(lines) <= 3, lines  # 12 s of EMFILE: one line per 10 s interval
            assert_no_traceback(agent)


async def _watch_one(path: str, seconds: float) -> int:
    """Keep one FetchX509SVID stream open for ``seconds``; return how many replies it got (>= 1)."""
    channel = Channel(path=path)
    try:
        async with channel.request(
            wire.FETCH_X509_SVID, Cardinality.UNARY_STREAM, wl.X509SVIDRequest,
            wl.X509SVIDResponse, metadata=HEADER, timeout=seconds + 30,
        ) as stream:  # fmt: skip
            await stream.send_message(wl.X509SVIDRequest(), end=True)
            assert await stream.recv_message() is not None
            await asyncio.sleep(seconds)
            # Still open after several idle timeouts: the connection is busy, not idle.
            assert not channel._protocol.handler.connection_lost  # type: ignore[union-attr]
            await stream.cancel()
            return 1
    finally:
        channel.close()


def test_idle_connections_are_closed_and_streams_are_not() -> None:
    require_root()
    with public_dir() as directory:
        config = dev_agent_config(directory, limits={"idle_timeout": "1s"})
        with AgentProcess(directory, config) as agent:
            idle = spawn(
                "idle", ["--socket", str(agent.socket_path), "--count", "50", "--hold", "4"], uid=ATTACKER
            )
            assert asyncio.run(_watch_one(str(agent.socket_path), 4)) == 1
            result = result_of(idle)
            assert result["open_at_end"] == 0, result
            assert agent.metric("spire_pqc_agent_connections_closed_total", reason="idle_timeout") >= 50
            assert_no_traceback(agent)
