"""The sdist and wheel from `python -m build` are complete, and the wheel works on its own.

Installed into a fresh virtualenv outside the checkout (no PYTHONPATH, isolated mode), the wheel's
console scripts run the demo and a short benchmark; the real-SPIRE half is in test_installed_spire.py.
"""

from __future__ import annotations

import configparser
import email.parser
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.packaging._support import CHECKOUT, Dists, InstalledVenv, checkout_files

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1200)]

ENTRY_POINTS = {
    "spire-pqc": "spire_pqc.cli.main:main",
    "spire-pqc-composer": "spire_pqc.cli.plugin:main",
}


def _package_sources() -> set[str]:
    """Every file of the package in the checkout: modules, generated protobuf modules and stubs, py.typed."""
    return {name for name in checkout_files() if name.startswith("spire_pqc/") and "__pycache__" not in name}


def test_wheel_holds_every_module_stub_and_the_typed_marker(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    missing = _package_sources() - names
    assert not missing, f"files of the package missing from the wheel: {sorted(missing)}"
    assert "spire_pqc/py.typed" in names
    assert any(n.startswith("spire_pqc/_proto/") and n.endswith("_pb2.pyi") for n in names)
    strays = sorted(n for n in names if not n.startswith(("spire_pqc/", "spire_pqc-")))
    assert not strays, f"the wheel carries files outside the package: {strays}"

    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    assert dict(parser["console_scripts"]) == ENTRY_POINTS

    # The runtime requirements are exactly pyproject's, so the wheel installs what the code imports.
    declared = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["dependencies"]
    shipped = [
        value
        for key, value in email.parser.Parser().parsestr(metadata).items()
        if key == "Requires-Dist" and "extra ==" not in value
    ]
    assert {str(Requirement(r)) for r in shipped} == {str(Requirement(r)) for r in declared}

    # Licensed as SPIRE is (Apache-2.0), the licence text shipped (PEP 639).
    fields = email.parser.Parser().parsestr(metadata)
    assert fields["License-Expression"] == "Apache-2.0"
    assert fields.get_all("License-File") == ["LICENSE"]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "Topic :: Security :: Cryptography" in (fields.get_all("Classifier") or [])


def test_sdist_carries_the_package_protos_constraints_and_deployment_files(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as sdist:
        prefix = sdist.getnames()[0].split("/")[0]
        names = {name.removeprefix(f"{prefix}/") for name in sdist.getnames()}
    wanted = _package_sources() | {
        name
        for name in checkout_files()
        if name.startswith(("proto/", "packaging/", "docs/", "plugins/", "examples/"))
        and "__pycache__" not in name
    }
    wanted |= {"constraints.txt", "README.md", "pyproject.toml", "LICENSE"}
    missing = wanted - names
    assert not missing, f"files missing from the sdist: {sorted(missing)}"
    assert not any(name.startswith("tests/") for name in names)


def test_installed_wheel_imports_from_its_own_site_packages(installed: InstalledVenv) -> None:
    result = installed.run("python", "-I", "-c", "import spire_pqc; print(spire_pqc.__file__)")
    assert result.returncode == 0, result.stderr
    location = Path(result.stdout.strip())
    assert installed.root in location.parents, location
    assert CHECKOUT not in location.parents
    assert (location.parent / "py.typed").is_file()


def test_installed_demo_runs_outside_the_checkout(installed: InstalledVenv) -> None:
    result = installed.run("spire-pqc", "demo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verification: OK" in result.stdout
    assert "group X25519MLKEM768" in result.stdout
    assert "replayed request refused" in result.stdout


def test_installed_crypto_benchmark_runs_outside_the_checkout(installed: InstalledVenv) -> None:
    # The short form: 50 ms per operation and no `openssl speed` baseline (which alone takes ~40 s).
    result = installed.run("spire-pqc", "bench", "crypto", "--seconds", "0.05", "--no-openssl")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {tuple(line.split()[:2]) for line in result.stdout.splitlines() if line.split()}
    assert {("ML-DSA-65", "sign"), ("ML-KEM-768", "encaps"), ("X25519MLKEM768", "exchange")} <= rows


def test_installed_cli_reports_its_version(installed: InstalledVenv) -> None:
    version = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
    result = installed.run("spire-pqc", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"spire-pqc {version}"
