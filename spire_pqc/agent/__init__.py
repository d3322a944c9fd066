"""The spire-pqc node agent (docs/architecture.md; its Workload API: docs/workload-api.md).

Modules: :mod:`.config` (TOML → AgentConfig; docs/configuration.md), :mod:`.server` (:class:`~.server.Agent` lifecycle),
:mod:`.handler` (Workload API + HybridWorkload services), :mod:`.peercred` (caller attestation by
SO_PEERCRED, PID-reuse guard; the only grpclib-transport code), :mod:`.attestor` (unix selectors),
:mod:`.sources` (identity sources), :mod:`.pqc` (PQC keys and issuance per classical SVID),
:mod:`.caclient` (PQC CA clients), :mod:`.metrics`, :mod:`.notify`.
"""
