"""The SPIRE server plugin: go-plugin host, CredentialComposer, PQC CA endpoint (docs/architecture.md)."""
