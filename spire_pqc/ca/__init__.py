"""The PQC CA's issuance policy, pure: no gRPC, no SPIRE (docs/architecture.md, "Code layout")."""
