"""Fixtures for channel tests: one set of credentials per test session (minting is the slow part)."""

from __future__ import annotations

import pytest

from spire_pqc.svid import HybridSvid
from tests.unit.channel._creds import World, make_world


@pytest.fixture(scope="session")
def world() -> World:
    return make_world()


@pytest.fixture(scope="session")
def server_svid(world: World) -> HybridSvid:
    return world.main.mint("/server")


@pytest.fixture(scope="session")
def client_svid(world: World) -> HybridSvid:
    return world.main.mint("/client")
