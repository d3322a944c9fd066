"""Identity sources: where the node agent gets each caller's classical X509-SVIDs and bundles.

* :mod:`.dev` — the embedded development source (dev classical CA + in-process PQC CA);
* :mod:`.delegated` — SPIRE's Delegated Identity API on the SPIRE agent's admin socket.

Both implement :class:`.base.IdentitySource`.
"""
