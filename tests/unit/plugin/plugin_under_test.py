"""A tiny SPIRE plugin for tests/unit/plugin/test_host.py, run as its own process like SPIRE runs plugins.

It serves the CredentialComposer service with no method overridden (every call answers UNIMPLEMENTED, which
SPIRE reads as "keep the defaults") and a Config service:

- ``Configure`` accepts any configuration except ``fail = true``, and logs it at warning level with an
  exception attached (so the test sees an hclog ``error`` key);
- ``Validate`` calls SPIRE's IdentityProvider host service through the broker and reports what it got in
  ``notes``, which proves the broker address and the host-services channel work end to end.
"""

from __future__ import annotations

import logging
import sys

import grpc

from spire_pqc._proto.spire.hostservice.server.identityprovider.v1 import (
    identityprovider_pb2,
    identityprovider_pb2_grpc,
)
from spire_pqc._proto.spire.plugin.server.credentialcomposer.v1 import credentialcomposer_pb2_grpc
from spire_pqc._proto.spire.service.common.config.v1 import config_pb2, config_pb2_grpc
from spire_pqc.plugin.hclog import HclogHandler
from spire_pqc.plugin.host import HostServiceBroker, PluginService, serve_plugin

COMPOSER = "spire.plugin.server.credentialcomposer.v1.CredentialComposer"
CONFIG = "spire.service.common.config.v1.Config"

log = logging.getLogger("plugin_under_test")


class ConfigUnderTest(config_pb2_grpc.ConfigServicer):
    def __init__(self, broker: HostServiceBroker) -> None:
        self._broker = broker

    def Configure(
        self, request: config_pb2.ConfigureRequest, context: grpc.ServicerContext
    ) -> config_pb2.ConfigureResponse:
        if request.hcl_configuration.strip() == "fail = true":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "fail: asked to fail")
        try:
            raise ValueError("an error attached to a log record")
        except ValueError:
            log.warning("configured for %s", request.core_configuration.trust_domain, exc_info=True)
        return config_pb2.ConfigureResponse()

    def Validate(
        self, request: config_pb2.ValidateRequest, context: grpc.ServicerContext
    ) -> config_pb2.ValidateResponse:
        stub = identityprovider_pb2_grpc.IdentityProviderStub(self._broker.channel(timeout=5))
        identity = stub.FetchX509Identity(identityprovider_pb2.FetchX509IdentityRequest(), timeout=5)
        return config_pb2.ValidateResponse(
            valid=True,
            notes=[f"bundle:{identity.bundle.trust_domain}", f"chain:{len(identity.identity.cert_chain)}"],
        )


def main() -> int:
    logging.basicConfig(level=logging.DEBUG, handlers=[HclogHandler()])
    broker = HostServiceBroker()
    return serve_plugin(
        "CredentialComposer",
        [
            PluginService(
                COMPOSER,
                credentialcomposer_pb2_grpc.add_CredentialComposerServicer_to_server,
                credentialcomposer_pb2_grpc.CredentialComposerServicer(),
            ),
            PluginService(CONFIG, config_pb2_grpc.add_ConfigServicer_to_server, ConfigUnderTest(broker)),
        ],
        broker=broker,
        on_deinit=lambda: log.info("deinit"),
    )


if __name__ == "__main__":
    sys.exit(main())
