"""A PQC CA whose reply holds a certificate cryptography cannot fully parse (a confused or hostile CA).

The node agent must count the failed issuance and retry, like any other refusal. Before issue 9 an
x509.InvalidVersion from the reply escaped the provisioning task (it is not a ValueError, and the
retry loop catches spire-pqc errors only), so that workload never got PQC credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from grpclib.exceptions import GRPCError

from spire_pqc._internal import der as asn1
from spire_pqc._internal import wire
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.config import DevSourceConfig
from spire_pqc.agent.server import Agent
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.ca.request import IssueRequest, IssueResponse
from tests.unit.agent._support import HEADER, dev_config, first_reply, short_dir
from tests.unit.credentials.certedit import SERIAL, VERSION, Parts

HYBRID = wire.FETCH_HYBRID_SVIDS
BAD_FIELDS = {
    "version-4": (VERSION, asn1.tlv(0xA0, asn1.integer(3))),
    "serial-negative": (SERIAL, asn1.tlv(asn1.INTEGER, b"\xfe")),
}


class HostileCA:
    """Answers the first ``bad_replies`` requests with a malformed PQC SVID, then like the dev CA."""

    def __init__(self, source: DevIdentitySource, field: int, value: bytes, bad_replies: int) -> None:
        self.source = source
        self.field, self.value = field, value
        self.bad_replies = bad_replies

    async def issue(self, request: IssueRequest) -> IssueResponse:
        response = await self.source.local_ca_client().issue(request)
        if self.bad_replies <= 0:
            return response
        self.bad_replies -= 1
        leaf = x509.load_der_x509_certificate(response.pqc_svid_chain[0])
        # The signature no longer matters: the agent must refuse the reply before it looks at it.
        malformed = Parts.of(leaf).replace(self.field, self.value).sign(lambda tbs: b"\x00" * 3309)
        return dataclasses.replace(response, pqc_svid_chain=(malformed, *response.pqc_svid_chain[1:]))

    async def close(self) -> None:
        return None


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", sorted(BAD_FIELDS))
async def test_a_malformed_ca_reply_is_a_counted_failure_then_retried(kind: str) -> None:
    config = dataclasses.replace(
        dev_config(short_dir()), retry_initial=dt.timedelta(seconds=0.05), retry_max=dt.timedelta(seconds=0.2)
    )
    assert isinstance(config.source, DevSourceConfig)
    source = DevIdentitySource(config.source)
    hostile = HostileCA(source, *BAD_FIELDS[kind], bad_replies=2)
    agent = Agent(config, source=source, ca_client=hostile, first_pqc_wait=0.5)
    async with agent:
        # A workload asking for its hybrid SVID starts the issuance (UNAVAILABLE until it succeeds).
        with contextlib.suppress(GRPCError):
            await first_reply(
                agent.socket_path, HYBRID, hy.HybridSVIDRequest(), hy.HybridSVIDResponse, metadata=HEADER
            )
        async with asyncio.timeout(30):
            while agent.metrics.value("spire_pqc_agent_pqc_issuance_total", result="success") == 0:
                await asyncio.sleep(0.02)
        assert agent.metrics.value("spire_pqc_agent_pqc_issuance_total", result="failure") == 2
