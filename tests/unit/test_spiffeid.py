"""SPIFFE ID and trust domain parsing (SPIFFE-ID.md §2) and the fail-closed matchers."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.errors import AuthorizationError, SpiffeIdError, SpirePqcError
from spire_pqc.spiffeid import (
    MAX_ID_BYTES,
    MAX_TRUST_DOMAIN_BYTES,
    SpiffeId,
    TrustDomain,
    match_any,
    match_id,
    match_member_of,
    match_one_of,
)

# (input, trust domain, path)
VALID = [
    # SPIFFE-ID.md §2 and §2.2 examples.
    ("spiffe://trust-domain-name/path", "trust-domain-name", "/path"),
    ("spiffe://staging.example.com/payments/mysql", "staging.example.com", "/payments/mysql"),
    ("spiffe://staging.example.com/payments/web-fe", "staging.example.com", "/payments/web-fe"),
    ("spiffe://k8s-west.example.com/ns/staging/sa/default", "k8s-west.example.com", "/ns/staging/sa/default"),
    (
        "spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453",
        "example.com",
        "/9eebccd2-12bf-40a6-b262-65fe0487d453",
    ),
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://example.org/a", "example.org", "/a"),
    ("spiffe://a", "a", ""),
    ("spiffe://1.2.3.4/x", "1.2.3.4", "/x"),
    ("spiffe://under_score.example/Mixed.Case-_seg", "under_score.example", "/Mixed.Case-_seg"),
    ("spiffe://example.org/...", "example.org", "/..."),
    ("spiffe://example.org/.a/..b/a.", "example.org", "/.a/..b/a."),
    ("spiffe://example.org/UPPER", "example.org", "/UPPER"),
    ("spiffe://-.-/_", "-.-", "/_"),
    ("spiffe://example.org/spire/agent/join_token/0f1e", "example.org", "/spire/agent/join_token/0f1e"),
]

# (input, fragment of the reason)
INVALID = [
    ("", "empty"),
    ("example.org", "missing the 'spiffe://' prefix"),
    ("spiffe:example.org/a", "missing the 'spiffe://' prefix"),
    ("spiffe:/example.org/a", "missing the 'spiffe://' prefix"),
    ("https://example.org/a", "scheme must be 'spiffe'"),
    ("SPIFFE://example.org/a", "scheme must be lower case"),
    ("Spiffe://example.org/a", "scheme must be lower case"),
    ("://example.org", "scheme must be 'spiffe'"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///path", "trust domain is missing"),
    ("spiffe://Example.org/a", "must be lower case"),
    ("spiffe://EXAMPLE.ORG", "must be lower case"),
    ("spiffe://example.org:8080/a", "port"),
    ("spiffe://example.org:/a", "port"),
    ("spiffe://user@example.org/a", "userinfo"),
    ("spiffe://user:pass@example.org/a", "userinfo"),
    ("spiffe://example.org/a?b=c", "query"),
    ("spiffe://example.org?x", "query"),
    ("spiffe://example.org/a#frag", "fragment"),
    ("spiffe://example.org#", "fragment"),
    ("spiffe://exa mple.org/a", "' ' at position 3"),
    ("spiffe://exa%41mple.org", "'%'"),
    ("spiffe://exämple.org", "'ä'"),
    ("spiffe://[::1]/a", "port"),
    ("spiffe://example.org/", "must not end with '/'"),
    ("spiffe://example.org/a/", "must not end with '/'"),
    ("spiffe://example.org//a", "empty segments"),
    ("spiffe://example.org/a//b", "empty segments"),
    ("spiffe://example.org/.", "'.' segments"),
    ("spiffe://example.org/..", "'..' segments"),
    ("spiffe://example.org/a/./b", "'.' segments"),
    ("spiffe://example.org/a/../b", "'..' segments"),
    ("spiffe://example.org/a%20b", "percent-encoded"),
    ("spiffe://example.org/a b", "' '"),
    ("spiffe://example.org/ä", "'ä'"),
    ("spiffe://example.org/a:b", "':'"),
    ("spiffe://example.org/a@b", "'@'"),
    ("spiffe://example.org/a+b", "'+'"),
    ("spiffe://example.org/a\\b", "'\\\\'"),
    ("spiffe://example.org/a\nb", "'\\n'"),
    (" spiffe://example.org/a", "scheme must be 'spiffe'"),
    ("spiffe://example.org/a ", "' '"),
    ("spiffe://" + "a" * (MAX_TRUST_DOMAIN_BYTES + 1), "longer than 255 bytes"),
    ("spiffe://example.org/" + "a" * MAX_ID_BYTES, "longer than 2048 bytes"),
]


@pytest.mark.parametrize(("text", "td", "path"), VALID, ids=[v[0][:60] for v in VALID])
def test_valid_ids_parse_into_their_parts(text: str, td: str, path: str) -> None:
    sid = SpiffeId.parse(text)
    assert sid.trust_domain == TrustDomain(td)
    assert sid.path == path
    assert str(sid) == text
    assert sid.is_root == (path == "")
    assert SpiffeId.from_parts(td, path) == sid
    assert SpiffeId.from_parts(TrustDomain(td), path) == sid


@pytest.mark.parametrize(("text", "reason"), INVALID, ids=[i[0][:60] for i in INVALID])
def test_invalid_ids_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.parse(text)
    assert reason in str(info.value)
    assert "invalid SPIFFE ID" in str(info.value)


def test_table_sizes() -> None:
    assert len(VALID) + len(INVALID) >= 30


def test_length_limits_are_exact() -> None:
    prefix = "spiffe://example.org/"
    longest = prefix + "a" * (MAX_ID_BYTES - len(prefix))
    assert len(longest) == MAX_ID_BYTES
    assert str(SpiffeId.parse(longest)) == longest
    with pytest.raises(SpiffeIdError, match="longer than 2048"):
        SpiffeId.parse(longest + "a")
    with pytest.raises(SpiffeIdError, match="longer than 2048"):
        SpiffeId(TrustDomain("example.org"), "/" + "a" * (MAX_ID_BYTES - len(prefix) + 1))
    td = "a" * MAX_TRUST_DOMAIN_BYTES
    assert TrustDomain(td).name == td
    with pytest.raises(SpiffeIdError, match="longer than 255"):
        TrustDomain(td + "a")


def test_error_is_a_value_error_and_a_project_error() -> None:
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.parse("nope")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SpirePqcError)


def test_long_garbage_is_truncated_in_the_message() -> None:
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.parse("x" * 1500)
    assert len(str(info.value)) < 250


@pytest.mark.parametrize("value", [None, b"spiffe://example.org/a", 42])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(SpiffeIdError, match="must be a str"):
        SpiffeId.parse(value)  # type: ignore[arg-type]
    with pytest.raises(SpiffeIdError, match="must be a str"):
        TrustDomain.parse(value)  # type: ignore[arg-type]


# --- TrustDomain -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["example.org", "spiffe://example.org"])
def test_trust_domain_parse_accepts_name_and_id_form(text: str) -> None:
    td = TrustDomain.parse(text)
    assert td == TrustDomain("example.org")
    assert td.name == "example.org"
    assert str(td) == "example.org"
    assert td.id_string() == "spiffe://example.org"
    assert td.spiffe_id() == SpiffeId.parse("spiffe://example.org")
    assert repr(td) == "TrustDomain('example.org')"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Example.org", "lower case"),
        ("example.org:443", "port"),
        ("me@example.org", "userinfo"),
        ("example.org/", "'/'"),
        ("spiffe://example.org/workload", "has no path"),
        ("spiffe://example.org/", "must not end with '/'"),
        ("https://example.org", "scheme must be 'spiffe'"),
        ("spiffe:example.org", "missing the 'spiffe://' prefix"),
        ("exa mple.org", "' '"),
    ],
)
def test_trust_domain_parse_refuses(text: str, reason: str) -> None:
    with pytest.raises(SpiffeIdError) as info:
        TrustDomain.parse(text)
    assert reason in str(info.value)


def test_value_types_are_frozen_hashable_and_ordered() -> None:
    a = SpiffeId.parse("spiffe://a.org/x")
    b = SpiffeId.parse("spiffe://a.org/y")
    c = SpiffeId.parse("spiffe://b.org")
    assert sorted([c, b, a]) == [a, b, c]
    assert TrustDomain("a.org") < TrustDomain("b.org")
    assert {a, SpiffeId.parse("spiffe://a.org/x")} == {a}
    assert hash(TrustDomain("a.org")) == hash(TrustDomain.parse("spiffe://a.org"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.path = "/z"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.trust_domain.name = "evil.org"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a) == "SpiffeId('spiffe://a.org/x')"


def test_constructors_validate_too() -> None:
    with pytest.raises(SpiffeIdError):
        TrustDomain("Bad.Org")
    with pytest.raises(SpiffeIdError, match="must be empty or start with '/'"):
        SpiffeId(TrustDomain("example.org"), "no-slash")
    with pytest.raises(SpiffeIdError, match="must be a TrustDomain"):
        SpiffeId("example.org", "/a")  # type: ignore[arg-type]
    with pytest.raises(SpiffeIdError, match="must be empty or start with '/'"):
        SpiffeId.from_parts("example.org", "a/b")
    with pytest.raises(SpiffeIdError, match="lower case"):
        SpiffeId.from_parts("Example.org", "/a")


def test_membership_and_root() -> None:
    sid = SpiffeId.parse("spiffe://example.org/ns/prod")
    assert sid.is_member_of(TrustDomain("example.org"))
    assert not sid.is_member_of(TrustDomain("example.org.evil"))
    assert not sid.is_member_of(TrustDomain("org"))
    assert not sid.is_root
    assert TrustDomain("example.org").spiffe_id().is_root


# --- matchers ----------------------------------------------------------------------------------

ALICE = SpiffeId.parse("spiffe://example.org/alice")
BOB = SpiffeId.parse("spiffe://example.org/bob")
MALLORY = SpiffeId.parse("spiffe://evil.org/alice")


def test_match_any_accepts_everything() -> None:
    matcher = match_any()
    for sid in (ALICE, BOB, MALLORY):
        matcher(sid)  # accepted: no exception
    assert repr(matcher) == "match_any()"


def test_match_id() -> None:
    matcher = match_id("spiffe://example.org/alice")
    matcher(ALICE)  # accepted: no exception
    with pytest.raises(AuthorizationError) as info:
        matcher(BOB)
    assert (
        str(info.value)
        == "SPIFFE ID spiffe://example.org/bob is not allowed: expected spiffe://example.org/alice"
    )
    with pytest.raises(AuthorizationError):
        matcher(MALLORY)  # same path, other trust domain
    assert match_id(ALICE) == matcher


def test_match_one_of() -> None:
    matcher = match_one_of(ALICE, "spiffe://example.org/bob")
    matcher(ALICE)  # accepted: no exception
    matcher(BOB)  # accepted: no exception
    with pytest.raises(AuthorizationError) as info:
        matcher(MALLORY)
    message = str(info.value)
    assert "spiffe://evil.org/alice is not allowed" in message
    assert "spiffe://example.org/alice" in message
    assert "spiffe://example.org/bob" in message


def test_match_one_of_long_list_is_summarised() -> None:
    ids = [SpiffeId.parse(f"spiffe://example.org/w{i:02d}") for i in range(12)]
    with pytest.raises(AuthorizationError, match="and 7 more"):
        match_one_of(*ids)(MALLORY)


def test_match_one_of_empty_matches_nothing() -> None:
    matcher = match_one_of()
    for sid in (ALICE, BOB, MALLORY):
        with pytest.raises(AuthorizationError, match="allow-list is empty"):
            matcher(sid)


def test_match_member_of() -> None:
    matcher = match_member_of("example.org")
    matcher(ALICE)  # accepted: no exception
    matcher(TrustDomain("example.org").spiffe_id())  # accepted: no exception
    with pytest.raises(AuthorizationError, match=r"not a member of trust domain example\.org"):
        matcher(MALLORY)
    with pytest.raises(AuthorizationError):
        matcher(SpiffeId.parse("spiffe://example.org.evil/alice"))
    assert match_member_of(TrustDomain("example.org")) == match_member_of("spiffe://example.org")


def test_matcher_arguments_are_validated_up_front() -> None:
    with pytest.raises(SpiffeIdError):
        match_id("spiffe://example.org/a/")
    with pytest.raises(SpiffeIdError):
        match_one_of(ALICE, "not-an-id")
    with pytest.raises(SpiffeIdError):
        match_member_of("Example.org")


# --- properties --------------------------------------------------------------------------------

_TD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
_SEG_ALPHABET = _TD_ALPHABET + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

trust_domains = st.text(_TD_ALPHABET, min_size=1, max_size=40)
segments = st.text(_SEG_ALPHABET, min_size=1, max_size=12).filter(lambda s: s not in {".", ".."})
paths = st.lists(segments, max_size=6).map(lambda segs: "".join("/" + s for s in segs))
valid_ids = st.builds(lambda td, path: f"spiffe://{td}{path}", trust_domains, paths)
id_like = st.one_of(
    st.text(),
    st.text().map(lambda t: "spiffe://" + t),
    st.builds(
        lambda a, b: f"spiffe://{a}/{b}", st.text(_SEG_ALPHABET + "/:@?#%", max_size=20), st.text(max_size=20)
    ),
)


@given(id_like)
def test_any_text_parses_or_raises_spiffe_id_error(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except SpiffeIdError:
        return
    # No normalisation: a valid ID prints back exactly as given and re-parses to itself.
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid
    assert set(sid.trust_domain.name) <= set(_TD_ALPHABET)


@given(valid_ids)
def test_generated_valid_ids_round_trip(text: str) -> None:
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert SpiffeId.from_parts(sid.trust_domain, sid.path) == sid
    assert TrustDomain.parse(sid.trust_domain.id_string()) == sid.trust_domain
    assert sid.is_member_of(TrustDomain.parse(str(sid.trust_domain)))
    match_member_of(sid.trust_domain)(sid)
    match_id(sid)(sid)


@given(valid_ids, valid_ids)
def test_ordering_is_by_trust_domain_then_path(a: str, b: str) -> None:
    x, y = SpiffeId.parse(a), SpiffeId.parse(b)
    assert (x < y) == ((x.trust_domain.name, x.path) < (y.trust_domain.name, y.path))
    assert (x == y) == (a == b)


@given(valid_ids, st.sampled_from(["?", "#", "//", "/", "/.", "/..", ":1", "%", " "]))
def test_appending_a_forbidden_piece_breaks_a_valid_id(text: str, piece: str) -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(text + piece)
