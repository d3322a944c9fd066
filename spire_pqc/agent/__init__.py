"""The spire-pqc node agent (DESIGN.md §4, "Node agent").

Modules: :mod:`.config` (TOML → AgentConfig), :mod:`.server` (:class:`~.server.Agent` lifecycle),
:mod:`.handler` (Workload API + HybridWorkload services), :mod:`.peercred` (caller attestation by
SO_PEERCRED, PID-reuse guard; the only grpclib-transport code), :mod:`.attestor` (unix selectors),
:mod:`.sources` (identity sources), :mod:`.pqc` (PQC keys and issuance per classical SVID),
:mod:`.caclient` (PQC CA clients), :mod:`.metrics`, :mod:`.notify`.
"""
