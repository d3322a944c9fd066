"""PQC bundle federation between trust domains (docs/federation.md).

* :mod:`.document` — the signed PQC bundle document: a SPIFFE bundle of PQC roots and PQC JWT keys,
  with a detached ML-DSA-65 JWS anchored in the roots already trusted.
* :mod:`.endpoint` — the bundle endpoint server (``https_spiffe``: the classical server SVID, hybrid
  X25519MLKEM768 key exchange).
* :mod:`.client` — one fetch from a remote endpoint, with the ``https_spiffe`` server check.
* :mod:`.watcher` — follows remote endpoints: refresh, verify, keep the last good bundle, report changes.

Example::

    watcher = FederatedBundleWatcher(
        [RemoteTrust(BundleEndpoint(td_b, "spire-b", 8443, SpiffeId.parse("spiffe://b/spire/server")), roots_b)],
        classical_bundles=classical_bundles, on_update=lambda trust: push(trust.pqc_bundle()),
    )
    await watcher.run()
"""
