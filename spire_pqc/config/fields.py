"""Value types of configuration keys, shared by the agent's TOML file and the plugin's ``plugin_data``.

Each type is an ``Annotated`` pydantic type whose validator accepts exactly the documented syntax and
nothing else: no coercion (``"true"`` is not a boolean, ``1`` is not a string, ``30`` is not a
duration), and a refusal says what is expected, quoting the value (bounded, so a crafted file cannot
make an error message huge). :class:`Kind` names a type and its syntax in the reference
documentation (docs/configuration.md, "Value types"), which is generated from these definitions.

Plain parsing functions (:func:`parse_address`, :func:`absolute_path`, …) raise ``ValueError`` and
serve validators that compose them (a tunnel's ``unix:`` or ``host:port`` listener, for example).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import PlainValidator, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from spire_pqc.config.duration import parse_duration
from spire_pqc.spiffeid import SpiffeId, TrustDomain

__all__ = [
    "ADDRESS",
    "Address",
    "Addresses",
    "AbsolutePath",
    "Duration",
    "Flag",
    "Kind",
    "LoopbackAddress",
    "PositiveInt",
    "Selectors",
    "Size",
    "SocketMode",
    "SpiffeIdText",
    "Text",
    "TrustDomainName",
    "WorkloadId",
    "WorkloadIds",
    "absolute_path",
    "array",
    "checked",
    "choice",
    "format_address",
    "is_loopback",
    "parse_address",
    "problem",
    "shown",
]

T = TypeVar("T")

MAX_INT = 2**31 - 1  # counts and limits: anything larger is a typo, not a setting
_SELECTOR = re.compile(r"^[a-z0-9_-]+:.+$", re.DOTALL)
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")
_SIZE = re.compile(r"^(\d{1,15})\s*(B|KB|MB|GB|KiB|MiB|GiB)$")
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@dataclasses.dataclass(frozen=True)
class Kind:
    """How the reference documentation names a value type, and the syntax it accepts."""

    name: str
    syntax: str = ""


def shown(value: object, limit: int = 80) -> str:
    """Untrusted input quoted for an error message: a bounded ``repr`` of a scalar, the kind of anything
    else (a crafted file may nest arrays or tables deeper than ``repr`` can go)."""
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "a table"
    if not isinstance(value, str | int | float | bool):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def problem(message: str) -> PydanticCustomError:
    """A refusal whose message is shown as it is, after the key (``key: message``)."""
    return PydanticCustomError("config", message)


def checked(parse: Callable[[Any], T]) -> PlainValidator:
    """A pydantic validator from a plain parse function (ValueError → a problem with its message)."""

    def validate(value: Any) -> T:
        try:
            return parse(value)
        except (PydanticCustomError, ValidationError):
            raise
        except ValueError as exc:
            raise problem(str(exc)) from None

    return PlainValidator(validate)


# --- scalars -------------------------------------------------------------------------------------


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise ValueError(f"must be a positive integer (at most {MAX_INT})")
    return value


def absolute_path(text: str) -> Path:
    """``text`` as an absolute path; ValueError for a NUL byte or a relative path."""
    if "\x00" in text:
        raise ValueError("contains a NUL byte")
    path = Path(text)
    if not path.is_absolute():
        raise ValueError(f"{shown(text)} must be an absolute path")
    return path


def _path(value: object) -> Path:
    return absolute_path(_text(value))


def _socket_mode(value: object) -> int:
    # TOML has octal integers (0o660) but operators write modes as in chmod: accept both.
    if isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError(f"{shown(value)} is not an octal mode like '0660'") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        raise ValueError("must be an octal string like '0660'")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{oct(mode)} is not a permission mode (0..0777)")
    return mode


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) → (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        raise ValueError(f"{shown(text)} is not host:port")
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shown(text)}: only an IPv6 address goes in brackets") from None
    elif ":" in host:
        raise ValueError(f"{shown(text)}: write an IPv6 address in brackets, e.g. '[::1]:{port}'")
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{shown(text)}: {shown(host)} is not a host name or IP address")
    return host, int(port)


def _address(value: object) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ValueError("must be a 'host:port' string")
    return parse_address(value)


def _loopback_address(value: object) -> tuple[str, int]:
    host, port = _address(value)
    if not is_loopback(host):
        # What these listeners serve (health, metrics) is for the node's own operators.
        raise ValueError(f"{shown(value)} must be a loopback address (127.0.0.1, ::1 or localhost)")
    return host, port


def _duration(value: object) -> dt.timedelta:
    if isinstance(value, dt.timedelta) and value > dt.timedelta(0):
        return value  # a default (files give text: TOML and HCL have no duration type)
    return parse_duration(value)


def _size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ValueError(f"{shown(value)} is not a size like '16MiB', '512KiB' or a number of bytes")
    if not 1 <= size <= 2**40:
        raise ValueError(f"{shown(value)} is not a size between 1 byte and 1TiB")
    return size


def _spiffe_id(value: object) -> SpiffeId:
    if not isinstance(value, str):
        raise ValueError("must be a SPIFFE ID string")
    return SpiffeId.parse(value)


def _workload_id(value: object) -> SpiffeId:
    spiffe_id = _spiffe_id(value)
    if spiffe_id.is_root:
        raise ValueError("a workload SPIFFE ID needs a path")
    return spiffe_id


def _trust_domain(value: object) -> TrustDomain:
    if not isinstance(value, str):
        raise ValueError("must be a trust domain name string")
    return TrustDomain.parse(value)


def _selector(value: object) -> str:
    if not isinstance(value, str) or not _SELECTOR.match(value):
        raise ValueError(f"{shown(value)} is not a selector: write 'type:value', e.g. 'unix:uid:1000'")
    return value


def choice(*values: str) -> Callable[[object], str]:
    """A parse function accepting exactly one of ``values``."""

    def parse(value: object) -> str:
        if not isinstance(value, str) or value not in values:
            raise ValueError(f"must be one of {', '.join(values)}, got {shown(value)}")
        return value

    return parse


def array(
    item: Callable[[Any], T], *, of: str, distinct: bool = False, non_empty: bool = True
) -> Callable[[object], list[T]]:
    """A parse function for an array whose items ``item`` parses; each bad item is reported at its index.

    ``of`` names the items in the message (``must be a non-empty array of {of}``). ``distinct``
    refuses an item given twice (compared as parsed).
    """

    def parse(value: object) -> list[T]:
        if not isinstance(value, list) or (non_empty and not value):
            raise ValueError(f"must be a {'non-empty ' if non_empty else ''}array of {of}")
        items: list[T] = []
        errors: list[InitErrorDetails] = []
        for index, raw in enumerate(value):
            try:
                items.append(item(raw))
            except ValueError as exc:
                errors.append(_line(str(exc), (index,), raw))
        if distinct:
            twice = sorted((i for i, n in Counter(items).items() if n > 1), key=_text_of)
            errors += [_line(f"{shown(_text_of(i))} is listed more than once", (), value) for i in twice]
        if errors:
            raise ValidationError.from_exception_data("array", errors)
        return items

    return parse


def _line(message: str, loc: tuple[int | str, ...], value: object) -> InitErrorDetails:
    return InitErrorDetails(type=problem(message), loc=loc, input=value)


def _text_of(item: object) -> str:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int):
        return format_address(item)
    return str(item)


def format_address(address: tuple[str, int]) -> str:
    """(host, port) → ``host:port`` (``[v6]:port``), the form :func:`parse_address` reads."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the types -----------------------------------------------------------------------------------

Text = Annotated[str, checked(_text), Kind("string", "a non-empty string")]
Flag = Annotated[bool, checked(_flag), Kind("boolean", "`true` or `false`")]
PositiveInt = Annotated[int, checked(_positive_int), Kind("integer", f"an integer from 1 to {MAX_INT}")]
Duration = Annotated[
    dt.timedelta,
    checked(_duration),
    Kind(
        "duration",
        'Go duration syntax, as SPIRE\'s own configuration: `"90s"`, `"1h30m"`, `"500ms"`, `"0.5s"` '
        "(units `h`, `m`, `s`, `ms`, `us`, `ns`); positive; a bare number is refused",
    ),
]
AbsolutePath = Annotated[Path, checked(_path), Kind("path", "an absolute path (no NUL byte)")]
SocketMode = Annotated[
    int,
    checked(_socket_mode),
    Kind("octal mode", 'permission bits as an octal string, `"0660"` (or TOML `0o660`)'),
]
ADDRESS = Kind("host:port", '`"host:port"`, `"[ipv6]:port"` for IPv6; port 0 to 65535')
Address = Annotated[tuple[str, int], checked(_address), ADDRESS]
LoopbackAddress = Annotated[
    tuple[str, int],
    checked(_loopback_address),
    Kind("loopback host:port", "`host:port` on `127.0.0.1`, `::1` (`[::1]:port`) or `localhost`"),
]
Size = Annotated[
    int,
    checked(_size),
    Kind(
        "size", 'bytes, or a number with a unit: `"512KiB"`, `"16MiB"`, `"1GB"` (KiB/MiB/GiB are 1024-based)'
    ),
]
SpiffeIdText = Annotated[SpiffeId, checked(_spiffe_id), Kind("SPIFFE ID", '`"spiffe://trust.domain/path"`')]
WorkloadId = Annotated[SpiffeId, checked(_workload_id), Kind("SPIFFE ID", '`"spiffe://trust.domain/path"`')]
TrustDomainName = Annotated[
    TrustDomain, checked(_trust_domain), Kind("trust domain", 'a trust domain name, `"example.org"`')
]
Selectors = Annotated[
    list[str],
    checked(array(_selector, of="selectors like 'unix:uid:1000'")),
    Kind("selectors", 'a non-empty array of `"type:value"` selectors, e.g. `["unix:uid:1000"]`'),
]
WorkloadIds = Annotated[
    list[SpiffeId],
    checked(array(_workload_id, of="SPIFFE IDs")),
    Kind("SPIFFE IDs", "a non-empty array of SPIFFE IDs"),
]
Addresses = Annotated[
    list[tuple[str, int]],
    checked(array(_address, of="'host:port' strings", distinct=True)),
    Kind("host:port list", 'a non-empty array of distinct `"host:port"` strings'),
]


def _key_id(value: object) -> str:
    if not isinstance(value, str) or not _KEY_ID.match(value):
        raise ValueError(f"{shown(value)} is not a key id: 64 hex digits (`spire-pqc ca status` shows them)")
    return value.lower()


_KEY_ID = re.compile(r"^[0-9A-Fa-f]{64}$")
KeyIds = Annotated[
    list[str],
    checked(array(_key_id, of="key ids (64 hex digits)", non_empty=False)),
    Kind("key ids", "an array of intermediate key ids: hex SHA-256 of the SubjectPublicKeyInfo"),
]
