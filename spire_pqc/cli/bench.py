"""`spire-pqc bench`: benchmarks that report ratios measured in the same run (never unit tests)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("bench", help="run benchmarks (ratios against baselines in the same run)")
    sub = parser.add_subparsers(dest="bench_command", required=True, metavar="SUITE")

    crypto = sub.add_parser(
        "crypto", help="PQ primitives vs classical and vs `openssl speed` (OpenSSL >= 3.5)"
    )
    crypto.add_argument("--seconds", type=float, default=1.0, help="measuring time per operation")
    crypto.add_argument("--no-openssl", action="store_true", help="skip the `openssl speed` baseline")
    crypto.add_argument(
        "--backends",
        type=_backend_list,
        default=("openssl", "liboqs"),
        help="PQ backends to measure, each in its own process (default: openssl,liboqs; liboqs is found "
        "through OQS_INSTALL_PATH and reported as unavailable when missing)",
    )
    crypto.set_defaults(handler=_crypto)

    ca = sub.add_parser(
        "ca", help="PQC issuance throughput of one CA process per backend vs its crypto floor (same run)"
    )
    ca.add_argument("--requests", type=int, default=300, help="issuances per round and backend")
    ca.add_argument("--rounds", type=int, default=3)
    ca.add_argument("--backends", type=_backend_list, default=("openssl", "liboqs"))
    ca.add_argument(
        "--expiring", type=int, default=0, metavar="N",
        help="also: RSS of one CA process (liboqs) while N issuances go through a SQLite file ledger and expire",
    )  # fmt: skip
    ca.add_argument(
        "--endpoints", action="store_true",
        help="instead: issuance requests/s through two CA endpoint processes vs one, on one shared "
        "SQLite file ledger and one PostgreSQL ledger (first backend of --backends)",
    )  # fmt: skip
    ca.add_argument("--concurrency", type=int, default=8, help="with --endpoints: requests in flight")
    ca.set_defaults(handler=_ca)

    jwt = sub.add_parser(
        "jwt", help="hybrid JWT-SVID issuance, validation, agent fetch+validate vs classical (same run)"
    )
    jwt.add_argument("--iterations", type=int, default=300)
    jwt.add_argument(
        "--roundtrips",
        type=int,
        default=100,
        help="fetch+validate round trips on a dev agent's socket (0: none)",
    )
    jwt.set_defaults(handler=_jwt)

    agent = sub.add_parser(
        "agent",
        help="rotation fan-out to N open streams, RSS with 100 identities, restart on a kept state directory",
    )
    agent.set_defaults(handler=_agent)

    channel = sub.add_parser("channel", help="mutual handshake latency and bytes per mode vs classical mTLS")
    channel.add_argument("--handshakes", type=int, default=100)
    channel.add_argument(
        "--s-time",
        type=int,
        default=5,
        metavar="SECONDS",
        help="also run `openssl s_time` against OpenSSL's s_server and our pq-tls server (0: skip)",
    )
    channel.set_defaults(handler=_channel)

    tunnel = sub.add_parser(
        "tunnel",
        help="tunnel pair across two agent processes vs direct TCP: MB/s, CPU/GB, connect, round trip",
    )
    tunnel.add_argument("--megabytes", type=int, default=100)
    tunnel.set_defaults(handler=_tunnel)

    versus = sub.add_parser(
        "agent-vs-spire",
        help="our agent beside spire-agent (real SPIRE): fetch, first response, N streams, fan-out, RSS",
    )
    versus.add_argument("--streams", type=int, default=500)
    versus.add_argument("--fetches", type=int, default=100)
    versus.add_argument(
        "--ttl", type=int, default=20, help="X509-SVID TTL in seconds (SPIRE rotates at half)"
    )
    versus.set_defaults(handler=_versus)

    composer = sub.add_parser(
        "composer", help="`x509 mint` latency of a real SPIRE with vs without the plugin"
    )
    composer.add_argument("--mints", type=int, default=100)
    composer.add_argument("--backends", type=_backend_list, default=("openssl", "liboqs"))
    composer.set_defaults(handler=_composer)

    ledger = sub.add_parser(
        "ledger",
        help="issuance ledger record/lookup p50/p99 at N live entries and prune rate, SQLite vs PostgreSQL",
    )
    ledger.add_argument("--sizes", default="10000,100000,1000000", help="live entry counts, comma-separated")
    ledger.add_argument("--samples", type=int, default=500)
    ledger.add_argument("--prune-rows", type=int, default=100_000)
    ledger.set_defaults(handler=_ledger)

    rotation = sub.add_parser(
        "rotation", help="agent memory under rotation (dev source): RSS growth after warm-up, tracemalloc top"
    )
    rotation.add_argument("--rotations", type=int, default=10_000, help="SVID rotations delivered in all")
    rotation.add_argument("--identities", type=int, default=10)
    rotation.add_argument("--ttl", type=float, default=4.0, help="dev SVID TTL in seconds")
    rotation.add_argument("--seconds", type=float, default=240.0, help="spread the rotations over this long")
    rotation.add_argument(
        "--warmup", type=float, default=90.0, help="seconds before the RSS baseline is taken"
    )
    rotation.add_argument(
        "--source", choices=("dev", "spire"), default="dev",
        help="spire: real spire-server/spire-agent rotate the SVIDs (--ttl whole seconds; RSS of the "
        "agent process, at most --seconds)",
    )  # fmt: skip
    rotation.add_argument(
        "--traced", type=int, default=None,
        help="rotations under tracemalloc after the measured ones (default: a tenth of --rotations)",
    )  # fmt: skip
    rotation.add_argument(
        "--arenas", type=_arena_list, default=(0, 1),
        help="agent.malloc_arena_max of each run, comma-separated; 0 = glibc's default (default: 0,1)",
    )  # fmt: skip
    rotation.set_defaults(handler=_rotation)

    soak = sub.add_parser(
        "soak", help="legitimate workload p99 while hostile local users attack the agent (needs root)"
    )
    soak.add_argument("--connections", type=int, default=10_000, help="hostile connections in all")
    soak.add_argument("--seconds", type=float, default=30.0, help="length of each phase (alone, attacked)")
    soak.set_defaults(handler=_soak)


def _arena_list(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or any(c < 0 for c in counts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated arena counts (0: glibc default)"
        )
    return counts


def _backend_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or any(name not in ("openssl", "liboqs") for name in names):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of openssl, liboqs")
    return names


def _crypto(args: argparse.Namespace) -> int:
    from spire_pqc.bench import crypto as bench_crypto

    status: int = bench_crypto.main(
        seconds=args.seconds, use_openssl=not args.no_openssl, backends=args.backends
    )
    return status


def _ca(args: argparse.Namespace) -> int:
    from spire_pqc.bench import ca as bench_ca

    if args.endpoints:
        from spire_pqc.bench import endpoints as bench_endpoints

        report = bench_endpoints.run(
            requests=args.requests, concurrency=args.concurrency, rounds=args.rounds, backend=args.backends[0]
        )
        print(bench_endpoints.format_report(report))
        return 0
    if args.expiring:  # the RSS soak only (it takes minutes): `bench ca` alone measures throughput
        print(
            bench_ca.format_expiry(bench_ca.run_expiring(issuances=args.expiring, backend=args.backends[-1]))
        )
        return 0
    print(
        bench_ca.format_report(
            bench_ca.run(requests=args.requests, rounds=args.rounds, backends=args.backends)
        )
    )
    return 0


def _jwt(args: argparse.Namespace) -> int:
    from spire_pqc.bench import jwt as bench_jwt

    print(bench_jwt.format_report(bench_jwt.run(iterations=args.iterations, roundtrips=args.roundtrips)))
    return 0


def _composer(args: argparse.Namespace) -> int:
    from spire_pqc.bench import composer as bench_composer

    print(bench_composer.format_report(bench_composer.run(mints=args.mints, backends=args.backends)))
    return 0


def _agent(args: argparse.Namespace) -> int:
    from spire_pqc.bench import agent as bench_agent

    print(bench_agent.run())
    return 0


def _channel(args: argparse.Namespace) -> int:
    from spire_pqc.bench import channel as bench_channel

    print(bench_channel.format_report(bench_channel.run(handshakes=args.handshakes)))
    if args.s_time:
        print(bench_channel.format_s_time(bench_channel.run_s_time(seconds=args.s_time)))
    return 0


def _tunnel(args: argparse.Namespace) -> int:
    from spire_pqc.bench import tunnel as bench_tunnel

    print(bench_tunnel.format_report(bench_tunnel.run(megabytes=args.megabytes)))
    return 0


def _versus(args: argparse.Namespace) -> int:
    from spire_pqc.bench import versus_spire

    print(
        versus_spire.format_report(versus_spire.run(streams=args.streams, fetches=args.fetches, ttl=args.ttl))
    )
    return 0


def _ledger(args: argparse.Namespace) -> int:
    from spire_pqc.bench import ledger as bench_ledger

    sizes = [int(s) for s in args.sizes.split(",")]
    print(bench_ledger.run(sizes=sizes, samples=args.samples, prune_rows=args.prune_rows))
    return 0


def _rotation(args: argparse.Namespace) -> int:
    from spire_pqc.bench import rotation as bench_rotation

    if args.source == "spire":
        from spire_pqc.bench import rotation_spire

        soak = rotation_spire.run(
            rotations=args.rotations, identities=args.identities, ttl_s=max(1, round(args.ttl)),
            seconds=args.seconds, warmup_seconds=args.warmup,
        )  # fmt: skip
        print(bench_rotation.format_report([soak]))
        return 0
    soaks = bench_rotation.run(
        rotations=args.rotations, identities=args.identities, ttl_s=args.ttl, seconds=args.seconds,
        warmup_seconds=args.warmup, traced=args.traced, arenas=args.arenas,
    )  # fmt: skip
    print(bench_rotation.format_report(soaks))
    return 0


def _soak(args: argparse.Namespace) -> int:
    from spire_pqc.bench import soak as bench_soak

    print(bench_soak.format_report(bench_soak.run(connections=args.connections, seconds=args.seconds)))
    return 0
