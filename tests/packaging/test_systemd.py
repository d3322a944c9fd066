"""packaging/systemd: the node agent's unit, the spire-server drop-in and the sysusers entry.

Checked by systemd's own tools against a filesystem root laid out as docs/deploying.md installs them
(``systemd-analyze verify`` and ``security --offline``, ``systemd-sysusers --root``), and the unit's
central claim exercised for real: the agent, confined as the unit confines it (a dedicated uid, no
capabilities, no_new_privs, no supplementary groups, umask 077), attests and serves callers of *other*
users and refuses a user without an entry.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spire_pqc.cli.main import build_parser
from tests.packaging._support import CHECKOUT, InstalledVenv

SYSTEMD = CHECKOUT / "packaging" / "systemd"
AGENT_UNIT = SYSTEMD / "spire-pqc-agent.service"
SERVER_DROP_IN = SYSTEMD / "spire-server.service.d" / "spire-pqc.conf"
SYSUSERS = SYSTEMD / "spire-pqc.sysusers.conf"

# What an operator's spire-server unit may look like (SPIRE ships none); the drop-in is verified on top.
OPERATOR_SPIRE_SERVER_UNIT = """\
[Unit]
Description=SPIRE server
After=network-online.target

[Service]
User=spire
ExecStart=/opt/spire/bin/spire-server run -config /etc/spire/server.conf
StateDirectory=spire
ProtectSystem=strict
NoNewPrivileges=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX

[Install]
WantedBy=multi-user.target
"""


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} not found: run `make systemd-tools` (installs Debian's systemd package)"
    return found


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (keys may repeat, as systemd allows), comments dropped."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _install_executable(root: Path, path: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("#!/bin/sh\nexit 0\n")
    target.chmod(0o755)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A filesystem root with systemd's own units and ours installed where docs/deploying.md puts them."""
    system_units = next(
        p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()
    )
    shutil.copytree(system_units, tmp_path / "usr/lib/systemd/system", symlinks=True)
    etc = tmp_path / "etc/systemd/system"
    etc.mkdir(parents=True)
    shutil.copy(AGENT_UNIT, etc / AGENT_UNIT.name)
    (etc / "spire-server.service").write_text(OPERATOR_SPIRE_SERVER_UNIT)
    (etc / "spire-server.service.d").mkdir()
    shutil.copy(SERVER_DROP_IN, etc / "spire-server.service.d" / SERVER_DROP_IN.name)
    # ExecStart programs must exist and be executable inside the root for `verify` to pass.
    for unit in (AGENT_UNIT, etc / "spire-server.service"):
        for command in unit_settings(unit)["ExecStart"]:
            _install_executable(tmp_path, command.split()[0])
    return tmp_path


def _verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("systemd-analyze"), "verify", f"--root={root}", unit],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_units_pass_systemd_analyze_verify_without_a_warning(root: Path) -> None:
    for unit in ("spire-pqc-agent.service", "spire-server.service"):
        result = _verify(root, unit)
        # Unknown keys and bad values are only warnings in systemd: any output fails the test.
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
            f"{unit}:\n{result.stdout}{result.stderr}"
        )


def test_verify_reads_the_drop_in(root: Path) -> None:
    """The negative control: a broken drop-in is reported, so the clean run above did check it."""
    drop_in = root / "etc/systemd/system/spire-server.service.d/spire-pqc.conf"
    drop_in.write_text(drop_in.read_text() + "NoSuchDirective=yes\n")
    result = _verify(root, "spire-server.service")
    assert (
        "Unknown key" in result.stdout + result.stderr and "NoSuchDirective" in result.stdout + result.stderr
    )


def test_agent_unit_exposure_stays_low(root: Path) -> None:
    result = subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=yes", f"--root={root}", "--threshold=20",
         "spire-pqc-agent.service"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    summary = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert result.returncode == 0, f"exposure above 2.0: {summary}"


def test_agent_unit_hardening_and_command() -> None:
    settings = unit_settings(AGENT_UNIT)

    def one(key: str) -> str:
        (value,) = settings[key]
        return value

    assert one("User") not in ("root", "0") and one("User") == "spire-pqc"
    assert one("CapabilityBoundingSet") == "" and one("AmbientCapabilities") == ""
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict" and one("ProtectHome") == "yes" and one("PrivateTmp") == "yes"
    assert one("RuntimeDirectory") == "spire-pqc" and one("StateDirectory") == "spire-pqc"
    assert one("StateDirectoryMode") == "0700" and one("UMask") == "0077"
    assert int(one("LimitNOFILE")) >= 4096
    # These would break caller attestation (other users' /proc, real uids) or the cffi callbacks.
    for forbidden in ("ProtectProc", "ProcSubset", "PrivateUsers", "MemoryDenyWriteExecute", "DynamicUser"):
        assert forbidden not in settings, forbidden
    # ExecStart runs the wheel's console script with arguments the CLI accepts.
    program, *args = one("ExecStart").split()
    assert Path(program).name == "spire-pqc"
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.agent_command) == ("agent", "run")


def test_sysusers_creates_the_user_the_unit_runs_as(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / name).touch()
    result = subprocess.run(
        [_tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    users = {
        line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    user = unit_settings(AGENT_UNIT)["User"][0]
    assert user in users
    assert users[user][5] == "/var/lib/spire-pqc" and users[user][6].endswith("nologin")
    assert int(users[user][2]) < 1000  # a system user


# --- the unit's confinement, exercised ------------------------------------------------------------

AGENT_UID = 65534  # nobody: the dedicated, unprivileged user of the unit
OTHER_UID = 4242  # another local user with an entry
STRANGER_UID = 4343  # a local user without an entry

CONFIG = """\
[agent]
socket_path = "{socket}"
shutdown_grace = "1s"
[source]
kind = "dev"
[source.dev]
trust_domain = "example.org"
[[source.dev.entries]]
spiffe_id = "spiffe://example.org/root-workload"
selectors = ["unix:uid:0"]
[[source.dev.entries]]
spiffe_id = "spiffe://example.org/user-workload"
selectors = ["unix:uid:{other}"]
"""

FETCH = """\
import sys
from spiffe import WorkloadApiClient
client = WorkloadApiClient(socket_path=sys.argv[1])
try:
    print(client.fetch_x509_svid().spiffe_id)
except Exception as exc:
    print(type(exc).__name__, exc)
finally:
    client.close()
"""


def _as_user(uid: int, *command: str) -> list[str]:
    """``command`` as ``uid`` with what the unit leaves a process: no capabilities, no_new_privs, no groups."""
    return [
        _tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
        "--inh-caps=-all", "--bounding-set=-all", "--", *command,
    ]  # fmt: skip


@pytest.fixture
def run_dir() -> Iterator[Path]:
    if os.getuid() != 0:
        pytest.fail("this test switches uids: run the suite as root (as CI does)")
    path = Path(tempfile.mkdtemp(prefix="spq-unit-", dir="/tmp"))
    path.chmod(0o755)  # traversable by the unprivileged users below
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.packaging
def test_confined_installed_agent_serves_other_users_and_refuses_strangers(
    installed: InstalledVenv, run_dir: Path
) -> None:
    runtime = run_dir / "run"  # what RuntimeDirectory= gives the unit: owned by its user, 0755
    runtime.mkdir(mode=0o755)
    os.chown(runtime, AGENT_UID, AGENT_UID)
    socket = runtime / "agent.sock"
    config = run_dir / "agent.toml"
    config.write_text(CONFIG.format(socket=socket, other=OTHER_UID))
    config.chmod(0o644)
    log = run_dir / "agent.log"
    python = str(installed.python)
    with log.open("wb") as log_file:
        agent = subprocess.Popen(
            _as_user(AGENT_UID, "/bin/sh", "-c", 'umask 077 && exec "$@"', "sh",
                     str(installed.bin / "spire-pqc"), "agent", "run", "-c", str(config)),
            stdout=log_file, stderr=subprocess.STDOUT, cwd=run_dir, env=installed.env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert agent.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the confined agent did not create its socket"
            time.sleep(0.1)
        info = socket.stat()
        assert info.st_uid == AGENT_UID and stat.S_IMODE(info.st_mode) == 0o666

        def fetch(uid: int) -> str:
            result = subprocess.run(
                _as_user(uid, python, "-c", FETCH, f"unix://{socket}"),
                capture_output=True, text=True, timeout=120, check=False, cwd=run_dir, env=installed.env(),
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        assert fetch(0) == "spiffe://example.org/root-workload"
        assert fetch(OTHER_UID) == "spiffe://example.org/user-workload"
        refused = fetch(STRANGER_UID)
        assert refused.startswith("FetchX509SvidError") and "PERMISSION_DENIED" in refused, refused
    finally:
        agent.terminate()
        agent.wait(timeout=60)
    assert agent.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
