"""Issue 9, item 5: the agent's socket must not live where another user can swap paths under it.

With a parent directory another user can write to, a symlink put in place of the socket between
bind and a chmod by path turned a root-owned 0600 file into 0666. The agent now refuses a socket
directory that is writable by other users or owned by another user (before binding anything), creates
the socket with its final mode (umask around bind, no chmod by path), and never follows a symlink at
the socket path.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spire_pqc.bench.agentproc import AgentProcess, AgentProcessError
from tests.security._support import ATTACKER, dev_agent_config, public_dir, require_root


def _start_fails(directory: Path, socket_dir: Path) -> str:
    config = dev_agent_config(directory)
    config["agent"]["socket_path"] = str(socket_dir / "agent.sock")
    agent = AgentProcess(directory, config)
    try:
        with pytest.raises(AgentProcessError):
            agent.start(timeout=30)
        assert agent.proc is not None
        assert agent.proc.wait(30) != 0
    finally:
        agent.stop()
    assert not (socket_dir / "agent.sock").exists()
    return agent.log_text()


def test_a_socket_directory_others_can_write_is_refused() -> None:
    require_root()
    with public_dir() as directory:
        shared = directory / "shared"
        shared.mkdir(mode=0o777)
        os.chmod(shared, 0o777)  # mkdir's mode is filtered by the umask
        log = _start_fails(directory, shared)
        assert "agent.socket_path" in log and "writable by other users" in log, log
        assert "Traceback" not in log


def test_a_socket_directory_owned_by_another_user_is_refused() -> None:
    require_root()
    with public_dir() as directory:
        theirs = directory / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, ATTACKER, ATTACKER)
        log = _start_fails(directory, theirs)
        assert f"owned by uid {ATTACKER}" in log, log


def test_a_symlink_at_the_socket_path_is_not_followed() -> None:
    require_root()
    with public_dir() as directory:
        victim = directory / "victim"
        victim.write_text("secret")
        os.chmod(victim, 0o600)
        (directory / "agent.sock").symlink_to(victim)
        log = _start_fails_in_place(directory)
        assert "not a socket" in log, log
        assert stat.S_IMODE(victim.stat().st_mode) == 0o600
        assert victim.read_text() == "secret"


def _start_fails_in_place(directory: Path) -> str:
    agent = AgentProcess(directory, dev_agent_config(directory))
    try:
        with pytest.raises(AgentProcessError):
            agent.start(timeout=30)
    finally:
        agent.stop()
    return agent.log_text()


def test_the_socket_is_created_with_its_mode_whatever_the_umask() -> None:
    require_root()
    with public_dir() as directory:
        config = dev_agent_config(directory)
        config["agent"]["socket_mode"] = "0660"
        old = os.umask(0)  # the agent inherits a umask that would leave the socket 0777
        try:
            agent = AgentProcess(directory, config)
            agent.start()
        finally:
            os.umask(old)
        try:
            info = os.lstat(agent.socket_path)
            assert stat.S_ISSOCK(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o660
        finally:
            agent.stop()
