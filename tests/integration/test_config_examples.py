"""The example server.conf, as shipped, passes a real `spire-server validate` (SPIRE's config and plugin_data).

Only its host paths are moved into a temporary directory: the PQC CA files are made the way the plugin
README says (`spire-pqc ca init` / `ca intermediate`), plugin_cmd is the installed plugin executable and
plugin_checksum its real SHA-256.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from spire_pqc.bench.spirelab import plugin_command, spire_bin

pytestmark = [pytest.mark.spire]

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "spire_pqc.cli", *args], check=True, capture_output=True, timeout=120
    )


def test_example_server_conf_passes_spire_server_validate(tmp_path: Path) -> None:
    pki = tmp_path / "etc-spire-pqc"
    _cli("ca", "init", "--trust-domain", "example.org", "--out-dir", str(pki), "--no-encryption")
    _cli("ca", "intermediate", "--trust-domain", "example.org", "--root-dir", str(pki), "--out-dir", str(pki),
         "--no-encryption")  # fmt: skip
    plugin = plugin_command()
    text = (ROOT / "plugins" / "spire-pqc-composer" / "server.conf").read_text()
    replacements = {
        "/opt/spire-pqc/plugins/spire-pqc-composer/spire-pqc-composer": str(plugin),
        "<64 hex digits>": hashlib.sha256(plugin.read_bytes()).hexdigest(),
        "/etc/spire-pqc": str(pki),
        "/var/lib/spire-pqc": str(tmp_path / "plugin"),
        "/var/lib/spire": str(tmp_path / "spire"),
        "/tmp/spire-server/private/api.sock": str(tmp_path / "api.sock"),
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "server.conf"
    config.write_text(text)
    result = subprocess.run(
        [str(spire_bin("spire-server")), "validate", "-config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SPIRE server configuration file is valid" in result.stdout
