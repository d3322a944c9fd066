"""Contract tests: our protos against the upstream definitions."""
