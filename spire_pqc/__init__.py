"""spire-pqc: post-quantum (ML-DSA-65 / ML-KEM-768) credentials for SPIFFE workloads via SPIRE.

Public modules: :mod:`spire_pqc.errors`, :mod:`spire_pqc.crypto`, :mod:`spire_pqc.spiffeid`,
:mod:`spire_pqc.bundle`, :mod:`spire_pqc.svid`, :mod:`spire_pqc.workload`, :mod:`spire_pqc.channel`.
"""

__version__ = "0.1.0"
