from __future__ import annotations

import logging
import re

import pytest

from spire_pqc.channel.authorize import (
    authorize_id,
    authorize_matcher,
    authorize_member_of,
    authorize_one_of,
    check_authorizer,
    unsafe_authorize_any,
)
from spire_pqc.errors import AuthorizationError
from spire_pqc.spiffeid import SpiffeId

WEB = SpiffeId.parse("spiffe://example.org/web")
API = SpiffeId.parse("spiffe://example.org/api")
FOREIGN = SpiffeId.parse("spiffe://other.org/web")


def test_authorize_id_accepts_only_that_id() -> None:
    authorizer = authorize_id("spiffe://example.org/web")
    authorizer(WEB, ())
    with pytest.raises(AuthorizationError, match=re.escape("expected spiffe://example.org/web")):
        authorizer(API, ())


def test_authorize_one_of() -> None:
    authorizer = authorize_one_of(WEB, "spiffe://example.org/api")
    authorizer(WEB, ())
    authorizer(API, ())
    with pytest.raises(AuthorizationError):
        authorizer(FOREIGN, ())


def test_empty_one_of_rejects_everything() -> None:
    authorizer = authorize_one_of()
    for peer in (WEB, API, FOREIGN):
        with pytest.raises(AuthorizationError, match=re.escape("empty")):
            authorizer(peer, ())


def test_authorize_member_of() -> None:
    authorizer = authorize_member_of("example.org")
    authorizer(WEB, ())
    with pytest.raises(AuthorizationError, match=re.escape("not a member of trust domain example.org")):
        authorizer(FOREIGN, ())


def test_authorize_matcher_custom() -> None:
    def only_web_paths(spiffe_id: SpiffeId, /) -> None:
        if not spiffe_id.path.startswith("/web"):
            raise AuthorizationError(f"{spiffe_id} is not a web workload")

    authorizer = authorize_matcher(only_web_paths)
    authorizer(WEB, ())
    authorizer(FOREIGN, ())
    with pytest.raises(AuthorizationError, match=re.escape("not a web workload")):
        authorizer(API, ())


def test_unsafe_authorize_any_warns_on_each_use(caplog: pytest.LogCaptureFixture) -> None:
    authorizer = unsafe_authorize_any()
    with caplog.at_level(logging.WARNING, logger="spire_pqc.channel.authorize"):
        authorizer(WEB, ())
        authorizer(FOREIGN, ())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "spiffe://other.org/web" in warnings[1].getMessage()


def test_missing_authorizer_is_refused() -> None:
    with pytest.raises(AuthorizationError, match=re.escape("an authorizer is required")):
        check_authorizer(None)
