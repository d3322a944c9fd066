"""Lint: only spire_pqc/crypto/_backend.py and _liboqs.py may import a post-quantum implementation.

import-linter cannot forbid *subpackages* of external packages (cryptography's mldsa/mlkem), so
this small AST check enforces that part of the layering (docs/architecture.md, "Code layout").
Exit 1 lists every offending import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FORBIDDEN = (
    "cryptography.hazmat.primitives.asymmetric.mldsa",
    "cryptography.hazmat.primitives.asymmetric.mlkem",
    "oqs",
)
ALLOWED = {Path("spire_pqc/crypto/_backend.py"), Path("spire_pqc/crypto/_liboqs.py")}


def offending(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                found.append(f"{path}:{node.lineno}: imports {name}")
    return found


def main() -> int:
    problems = [
        p for path in sorted(Path("spire_pqc").rglob("*.py")) if path not in ALLOWED for p in offending(path)
    ]
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
