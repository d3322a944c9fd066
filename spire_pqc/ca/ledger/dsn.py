"""Ledger database names: ``sqlite:///ABSOLUTE/PATH``, ``sqlite://:memory:`` or ``postgresql://…``.

A DSN never carries the password (it is given separately, from a file or an environment variable),
and :attr:`LedgerDsn.display` is what logs and errors show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MEMORY = "sqlite://:memory:"
_SQLITE = "sqlite://"
_POSTGRES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class LedgerDsn:
    kind: str  # "sqlite" | "postgresql"
    path: Path | None  # sqlite: the database file; None for an in-memory database
    conninfo: str  # postgresql: the libpq URI as configured (without a password)
    display: str

    @property
    def in_memory(self) -> bool:
        return self.kind == "sqlite" and self.path is None

    @classmethod
    def parse(cls, text: str) -> LedgerDsn:
        """Parse or raise ValueError saying what is wrong (never echoing a password back)."""
        text = text.strip()
        if text == MEMORY:
            return cls("sqlite", None, "", MEMORY)
        if text.startswith(_SQLITE):
            rest = text[len(_SQLITE) :]
            if not rest.startswith("/") or "?" in rest or rest.rstrip("/") == "":
                raise ValueError(
                    "an SQLite ledger is 'sqlite:///ABSOLUTE/PATH/ledger.db' (or 'sqlite://:memory:')"
                )
            return cls("sqlite", Path(rest), "", f"sqlite://{rest}")
        if text.startswith(_POSTGRES):
            return cls._postgres(text)
        raise ValueError("must start with sqlite:// or postgresql://")

    @classmethod
    def _postgres(cls, text: str) -> LedgerDsn:
        from psycopg import conninfo

        try:
            params = conninfo.conninfo_to_dict(text)
        except Exception as exc:  # psycopg.ProgrammingError; its message may quote the URI
            raise ValueError("not a valid postgresql:// URI") from exc
        if params.get("password") not in (None, ""):
            raise ValueError(
                "contains a password: remove it and set ledger_password_file or ledger_password_env"
            )
        user = f"{params['user']}@" if params.get("user") else ""
        host = str(params.get("host") or "localhost")
        port = f":{params['port']}" if params.get("port") else ""
        where = f"[{host}]" if host.startswith("/") else host
        return cls("postgresql", None, text, f"postgresql://{user}{where}{port}/{params.get('dbname') or ''}")
