"""`spire-pqc doctor`'s clock-skew check against an agent /status served over real loopback HTTP:
beyond MAX_CLOCK_SKEW either way it fails naming the CA, the direction and the NTP fix; within it passes."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from spire_pqc.cli.doctor import MAX_CLOCK_SKEW, check_clock_skew


def _serve(document: dict[str, Any]) -> tuple[http.server.HTTPServer, tuple[str, int]]:
    body = json.dumps(document).encode()

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, ("127.0.0.1", int(server.server_address[1]))


@pytest.fixture
def agent_status() -> Iterator[Any]:
    servers: list[http.server.HTTPServer] = []

    def start(skew: float | None, last_error: str | None = None) -> tuple[str, int]:
        ca = {"address": "10.0.0.5:8443", "clock_skew_seconds": skew, "last_error": last_error,
              "last_success": "2026-12-02T03:00:00+00:00"}  # fmt: skip
        server, address = _serve({"ca": ca})
        servers.append(server)
        return address

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("skew", "direction"), [(MAX_CLOCK_SKEW + 20.0, "ahead of"), (-45.5, "behind")])
def test_a_skew_beyond_the_limit_fails_with_the_ntp_fix(
    agent_status: Any, skew: float, direction: str
) -> None:
    (check,) = check_clock_skew(agent_status(skew))
    assert check.status == "fail", check
    assert f"the PQC CA at 10.0.0.5:8443 is {abs(skew):.1f}s {direction} this node" in check.detail
    assert "NTP" in check.fix and "freshness_window" in check.fix


def test_a_skew_within_the_limit_passes(agent_status: Any) -> None:
    (check,) = check_clock_skew(agent_status(MAX_CLOCK_SKEW - 0.5))
    assert check.status == "ok" and "against the PQC CA at 10.0.0.5:8443" in check.detail, check


def test_an_unmeasured_skew_with_a_ca_error_fails_naming_the_error(agent_status: Any) -> None:
    (check,) = check_clock_skew(agent_status(None, "UNAVAILABLE: connection refused"))
    assert check.status == "fail" and "last error: UNAVAILABLE: connection refused" in check.detail, check
