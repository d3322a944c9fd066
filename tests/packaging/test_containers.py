"""packaging/containers: the agent and spire-server(+plugin) image recipes.

No container engine can build here, so these tests check what can be checked without one: every file a
recipe copies exists, and those files alone build the same wheel as the checkout; the entry points,
paths, users and versions agree with pyproject.toml, SPIRE's own image, the Kubernetes manifests and the
Helm values.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from spire_pqc.bench.spirelab import SPIRE_VERSION
from spire_pqc.cli.main import build_parser
from tests.packaging._support import CHECKOUT, Dists

CONTAINERS = CHECKOUT / "packaging" / "containers"
AGENT = CONTAINERS / "agent.Containerfile"
SERVER = CONTAINERS / "spire-server.Containerfile"
VENV = "/opt/spire-pqc"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(path: Path) -> list[Instruction]:
    """Instructions of a Containerfile: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def _final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[last_from:]


def _exec_form(instructions: list[Instruction], keyword: str) -> list[str]:
    (value,) = [ins.args for ins in _final_stage(instructions) if ins.keyword == keyword]
    parsed = json.loads(value)  # exec form: signals reach the process directly, no shell in between
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
    return parsed


def _context_copies(instructions: list[Instruction]) -> list[str]:
    """Sources of COPY instructions that read the build context (not another stage)."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            *srcs, _dest = ins.args.split()
            sources.extend(srcs)
    return sources


def _console_scripts() -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts


@pytest.mark.parametrize("recipe", [AGENT, SERVER], ids=lambda p: p.name)
def test_recipe_copies_only_files_that_exist_and_makes_the_venv(recipe: Path) -> None:
    instructions = parse(recipe)
    assert {ins.keyword for ins in instructions} <= {
        "ARG", "FROM", "WORKDIR", "COPY", "RUN", "USER", "ENTRYPOINT", "CMD",
    }  # fmt: skip
    for source in _context_copies(instructions):
        assert (CHECKOUT / source).exists(), f"{recipe.name} copies {source}, which the repository lacks"
    runs = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    assert f"python -m venv {VENV}" in runs and "-c constraints.txt ." in runs
    # Never root at run time.
    (user,) = [ins.args for ins in _final_stage(instructions) if ins.keyword == "USER"]
    assert not user.startswith(("0", "root"))


@pytest.mark.packaging
def test_the_copied_files_alone_build_the_same_wheel(dists: Dists, tmp_path: Path) -> None:
    """What the build stage sees (its COPY sources) is enough for `pip install .`: it builds our wheel."""
    context = tmp_path / "context"
    for source in _context_copies(parse(AGENT)):
        target = context / source
        if (CHECKOUT / source).is_dir():
            shutil.copytree(CHECKOUT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / source, target)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(context)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as built, zipfile.ZipFile(dists.wheel) as reference:
        assert set(built.namelist()) == set(reference.namelist())
    assert _context_copies(parse(SERVER)) == _context_copies(parse(AGENT))  # both build the same wheel


def test_agent_image_runs_the_console_script_the_daemonset_expects() -> None:
    instructions = parse(AGENT)
    (program,) = _exec_form(instructions, "ENTRYPOINT")
    assert PurePosixPath(program) == PurePosixPath(VENV) / "bin" / "spire-pqc"
    assert _console_scripts()["spire-pqc"] == "spire_pqc.cli.main:main"
    command = _exec_form(instructions, "CMD")
    parsed = build_parser().parse_args(command)
    assert (parsed.command, parsed.agent_command) == ("agent", "run")

    daemonset: dict[str, Any] = yaml.safe_load(
        (CHECKOUT / "packaging/kubernetes/agent/daemonset.yaml").read_text()
    )
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == command  # the DaemonSet states the image's default command explicitly
    assert container["livenessProbe"]["exec"]["command"][0] == f"{VENV}/bin/python"
    (user,) = [ins.args for ins in _final_stage(instructions) if ins.keyword == "USER"]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    images = {c["image"] for c in pod["containers"] + pod["initContainers"]}
    assert len(images) == 1, "the init container uses the agent image (for its sh, mkdir and chown)"


def test_server_image_keeps_spires_entry_point_and_carries_the_plugin() -> None:
    instructions = parse(SERVER)
    # SPIRE's own image runs `/opt/spire/bin/spire-server run` (spiffe/spire Dockerfile), and the chart
    # appends `-config ...`: the same entry point keeps the chart working.
    assert _exec_form(instructions, "ENTRYPOINT") == ["/opt/spire/bin/spire-server", "run"]
    (version_arg,) = [
        ins.args for ins in instructions if ins.keyword == "ARG" and ins.args.startswith("SPIRE_")
    ]
    assert version_arg == f"SPIRE_VERSION={SPIRE_VERSION.removeprefix('v')}", (
        "the image must carry the tested SPIRE"
    )
    assert any(ins.args.startswith("ghcr.io/spiffe/spire-server:${SPIRE_VERSION}") for ins in instructions)

    values: dict[str, Any] = yaml.safe_load((CHECKOUT / "packaging/kubernetes/spire-values.yaml").read_text())
    server = values["spire-server"]
    plugin_cmd = server["customPlugins"]["credentialComposer"]["spire_pqc"]["plugin_cmd"]
    assert PurePosixPath(plugin_cmd) == PurePosixPath(VENV) / "bin" / "spire-pqc-composer"
    assert _console_scripts()["spire-pqc-composer"] == "spire_pqc.cli.plugin:main"
    assert server["image"]["tag"].startswith(SPIRE_VERSION.removeprefix("v") + "-spire-pqc-")
    runs = " ".join(ins.args for ins in instructions if ins.keyword == "RUN")
    assert f"sha256sum {plugin_cmd}" in runs  # the build prints plugin_checksum


def test_python_base_image_satisfies_requires_python() -> None:
    required = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11"
    for recipe in (AGENT, SERVER):
        (image,) = [
            ins.args for ins in parse(recipe) if ins.keyword == "ARG" and ins.args.startswith("PYTHON_")
        ]
        version = image.split(":", 1)[1].split("-", 1)[0]
        assert tuple(map(int, version.split("."))) >= (3, 11), recipe.name
