"""Private helpers (files, PEM, time). Not part of the public API."""
