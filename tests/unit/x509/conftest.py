"""``pq_backend``: run a test once per PQ backend (openssl, liboqs); see tests/_backends.py."""

from tests._backends import pq_backend

__all__ = ["pq_backend"]
