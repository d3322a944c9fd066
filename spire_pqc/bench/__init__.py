"""Benchmarks behind ``spire-pqc bench`` and the SPIRE / OpenSSL process drivers tests share with them.

Every benchmark compares against a baseline measured in the same run (README, "Benchmarks"). The drivers
(:mod:`spire_pqc.bench.spirelab`, :mod:`spire_pqc.bench.openssl_cli`) need no source checkout.
"""
