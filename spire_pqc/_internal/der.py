"""A small strict DER reader and writer for the few structures spire-pqc defines itself.

Strict means: definite lengths only, minimal length encoding, no trailing bytes where a structure
must end, and every length bounded by the remaining input. Every violation raises ParseError.
"""

from __future__ import annotations

from spire_pqc.errors import ParseError

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
SEQUENCE = 0x30


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return tlv(INTEGER, raw)


def encode_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray()
    first = parts[0] * 40 + parts[1]
    for arc in [first, *parts[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))


def decode_oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise ParseError("malformed OBJECT IDENTIFIER")
    numbers: list[int] = []
    current = 0
    for i, byte in enumerate(value):
        if current == 0 and byte == 0x80 and (i == 0 or not value[i - 1] & 0x80):
            raise ParseError("non-minimal OBJECT IDENTIFIER arc")
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(current)
            current = 0
    first = numbers[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(n) for n in head + numbers[1:])


class DerReader:
    """Reads TLVs from a byte string, front to back."""

    def __init__(self, data: bytes, *, what: str = "DER") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def peek_tag(self) -> int | None:
        return self._data[self._pos] if self._pos < len(self._data) else None

    def read(self) -> tuple[int, bytes]:
        data, pos = self._data, self._pos
        if pos + 2 > len(data):
            raise ParseError(f"{self._what}: truncated (need a tag and a length at offset {pos})")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise ParseError(f"{self._what}: multi-byte tags are not used here (offset {pos})")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise ParseError(f"{self._what}: indefinite length is not DER")
        else:
            count = first & 0x7F
            if count > 4 or pos + count > len(data):
                raise ParseError(f"{self._what}: length field too long or truncated")
            raw = bytes(data[pos : pos + count])
            pos += count
            length = int.from_bytes(raw, "big")
            if raw[0] == 0 or length < 0x80:
                raise ParseError(f"{self._what}: non-minimal length encoding")
        if pos + length > len(data):
            raise ParseError(f"{self._what}: value of {length} bytes runs past the end of the input")
        self._pos = pos + length
        return tag, bytes(data[pos : pos + length])

    def expect(self, tag: int, name: str) -> bytes:
        got, value = self.read()
        if got != tag:
            raise ParseError(f"{self._what}: {name}: expected tag 0x{tag:02x}, got 0x{got:02x}")
        return value

    def expect_end(self) -> None:
        if not self.at_end():
            raise ParseError(f"{self._what}: {len(self._data) - self._pos} unexpected trailing bytes")


def read_single(data: bytes, tag: int, *, what: str) -> bytes:
    """Parse ``data`` as exactly one TLV with ``tag`` and return its value."""
    reader = DerReader(data, what=what)
    value = reader.expect(tag, what)
    reader.expect_end()
    return value


def read_integer(value: bytes, *, what: str) -> int:
    if not value:
        raise ParseError(f"{what}: empty INTEGER")
    redundant_zero = value[0] == 0 and not value[1] & 0x80 if len(value) > 1 else False
    redundant_ones = value[0] == 0xFF and bool(value[1] & 0x80) if len(value) > 1 else False
    if redundant_zero or redundant_ones:
        raise ParseError(f"{what}: non-minimal INTEGER")
    return int.from_bytes(value, "big", signed=True)
