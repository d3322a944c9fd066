"""Which local user is on the other end of an accepted connection, as the kernel knows it.

* Unix socket: SO_PEERCRED (uid and gid at connect(2)) plus SO_PEERGROUPS (its supplementary groups).
* Loopback TCP: the kernel keeps the owner (uid) of the connecting socket, found with one exact
  ``sock_diag`` request (NETLINK_SOCK_DIAG, ``inet_diag_req_v2`` for the connection's 4-tuple; see
  ``sock_diag(7)``). A socket its process has already closed is reported with inode 0 and uid 0
  (observed on Linux 6.18): that is "unknown", never root. The kernel does not keep a socket's
  groups, so for TCP the uid's groups come from the user database (``getgrouplist``).

Used for the outbound tunnels' access lists and the per-uid cap of the health listener. Every
failure is an :class:`OSError` — the caller refuses the connection (fail closed).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import socket
import struct

from spire_pqc.agent.peercred import peer_credentials

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)

_NLMSGHDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid: sport, dport (big endian),
# src[16], dst[16], interface, cookie[2].
_REQ = struct.Struct("=BBBBI")
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode.
_MSG_UID_OFFSET = 4 + 48 + 12
_OWNER = struct.Struct("=II")  # uid, inode


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # an IPv4 client of a dual-stack listener has an IPv4 socket
    return address


def tcp_peer_uid(conn: socket.socket) -> int:
    """The uid owning the socket at the other end of ``conn``, an accepted loopback TCP connection."""
    peer_host, peer_port = conn.getpeername()[:2]
    local_host, local_port = conn.getsockname()[:2]
    peer, local = _address(peer_host), _address(local_host)
    family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
    request = (
        _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        # The peer's socket: its local end is our remote end.
        + _SOCKID.pack(peer_port, local_port, peer.packed.ljust(16, b"\0"), local.packed.ljust(16, b"\0"))
        + _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    )
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        nl.sendto(header + request, (0, 0))
        reply = nl.recv(65536)
    if len(reply) < _NLMSGHDR.size:
        raise OSError(errno.EPROTO, "short sock_diag reply")
    length, kind, _, _, _ = _NLMSGHDR.unpack_from(reply)
    if kind == NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", reply, _NLMSGHDR.size)
        raise OSError(-code, f"sock_diag: {os.strerror(-code)} (the peer is not a local socket)")
    if kind != SOCK_DIAG_BY_FAMILY or length < _NLMSGHDR.size + _MSG_UID_OFFSET + _OWNER.size:
        raise OSError(errno.EPROTO, f"unexpected sock_diag reply (type {kind}, {length} bytes)")
    uid, inode = _OWNER.unpack_from(reply, _NLMSGHDR.size + _MSG_UID_OFFSET)
    if inode == 0:
        # A socket its process already closed has no inode, and the kernel then reports uid 0 as its
        # owner: never take that for root.
        raise OSError(errno.ESRCH, "the connecting socket was closed before its owner could be read")
    return int(uid)


def unix_peer_groups(sock: socket.socket) -> frozenset[int]:
    """The supplementary groups of the process that connected ``sock`` (SO_PEERGROUPS)."""
    for count in (64, 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * count)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            raise
        return frozenset(struct.unpack(f"={len(raw) // 4}I", raw))
    raise OSError(errno.ERANGE, "too many supplementary groups")


def user_groups(uid: int) -> frozenset[int]:
    """The uid's primary and supplementary groups from the user database (empty if it has no entry)."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    return frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))


def local_peer(conn: socket.socket) -> tuple[int, frozenset[int]]:
    """(uid, groups) of the local process or user on the other end of an accepted connection."""
    if conn.family == socket.AF_UNIX:
        caller = peer_credentials(conn)
        return caller.uid, frozenset({caller.gid}) | unix_peer_groups(conn)
    uid = tcp_peer_uid(conn)
    return uid, user_groups(uid)
