"""The Workload API's wire names, spelled once for the agent, the SDK client, benches and tests.

The standard SPIFFE Workload API's proto has no package, so its methods are ``/SpiffeWorkloadAPI/<M>``;
every request carries the ``workload.spiffe.io: true`` security header (SPIFFE Workload API spec §5.1,
docs/workload-api.md). The hybrid extension is the ``spire_pqc.workload.v1.HybridWorkload`` service.
"""

from __future__ import annotations

from types import MappingProxyType

SECURITY_HEADER = "workload.spiffe.io"
#: The metadata every Workload API request carries (grpclib form).
SECURITY_METADATA = MappingProxyType({SECURITY_HEADER: "true"})

WORKLOAD_SERVICE = "SpiffeWorkloadAPI"
HYBRID_SERVICE = "spire_pqc.workload.v1.HybridWorkload"


def workload_method(name: str) -> str:
    """``/SpiffeWorkloadAPI/<name>``."""
    return f"/{WORKLOAD_SERVICE}/{name}"


def hybrid_method(name: str) -> str:
    """``/spire_pqc.workload.v1.HybridWorkload/<name>``."""
    return f"/{HYBRID_SERVICE}/{name}"


FETCH_X509_SVID = workload_method("FetchX509SVID")
FETCH_X509_BUNDLES = workload_method("FetchX509Bundles")
FETCH_JWT_SVID = workload_method("FetchJWTSVID")
FETCH_JWT_BUNDLES = workload_method("FetchJWTBundles")
VALIDATE_JWT_SVID = workload_method("ValidateJWTSVID")
FETCH_HYBRID_SVIDS = hybrid_method("FetchHybridSVIDs")
FETCH_PQC_BUNDLES = hybrid_method("FetchPQCBundles")
