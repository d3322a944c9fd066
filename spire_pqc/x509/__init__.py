"""PQC X.509 structures: OIDs, the SvidBinding and RelatedCertificate extensions, certificate building."""
