"""The ``spire-pqc`` and ``spire-pqc-composer`` entry points: they own argv, logging, signals and asyncio.run."""
