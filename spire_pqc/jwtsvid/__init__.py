"""JWT-SVIDs: the classical profile and the hybrid (post-quantum) JWT-SVID (docs/pq-jwt.md).

* :mod:`.classical` — validation of a classical JWT-SVID against its trust domain's JWT bundle.
* :mod:`.jws` — ML-DSA-65 JWS (RFC 7515, RFC 9964) and ``AKP`` JWKs.
* :mod:`.bundle` — the PQC JWT bundle: ML-DSA-65 ``AKP`` keys, each certified under the PQC root.
* :mod:`.hybrid` — the hybrid JWT-SVID: SPIRE's classical token plus a bound ML-DSA-65 JWS over the
  same claims; :func:`~.hybrid.sign_pqc_part` (the CA side) and :func:`~.hybrid.validate`.

Example::

    from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, validate
    verified = validate(HybridJwtSvid(classical, pqc), "my-audience", jwt_bundles=jwt_bundles,
                        pqc_jwt_bundles=pqc_jwt_bundles, pqc_bundles=pqc_bundles)
    print(verified.spiffe_id, verified.claims["exp"])
"""
