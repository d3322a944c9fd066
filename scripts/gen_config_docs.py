#!/usr/bin/env python3
"""Write the configuration reference generated from the models; ``--check`` fails if it is out of date.

The key tables of docs/configuration.md, README.md and plugins/spire-pqc-composer/README.md sit
between ``<!-- BEGIN GENERATED name -->`` and ``<!-- END GENERATED name -->`` and are rendered from
``spire_pqc.agent.config.AgentFile`` and ``spire_pqc.plugin.config.PluginData`` by
``spire_pqc.config.reference``: a key added to a model without documentation, or documented without
existing, makes ``--check`` (``make lint``, tests/unit/config/test_reference.py) fail.

Usage: ``python scripts/gen_config_docs.py`` (rewrite) or ``python scripts/gen_config_docs.py --check``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from spire_pqc.agent.config import AgentFile
from spire_pqc.config.reference import keys, render_keys, render_tables, render_types, replace_sections
from spire_pqc.plugin.config import PluginData

ROOT = Path(__file__).resolve().parent.parent


def sections() -> dict[str, str]:
    """Every generated section, by the name its markers carry."""
    return {
        "agent-reference": render_tables(AgentFile, heading="###"),
        "plugin-reference": render_keys(keys(PluginData), full_paths=False),
        "value-types": render_types(AgentFile, PluginData),
        "agent-keys": render_keys(keys(AgentFile), brief=True),
        "plugin-keys": render_keys(keys(PluginData), brief=True),
    }


FILES = ["docs/configuration.md", "README.md", "plugins/spire-pqc-composer/README.md"]


def regenerated() -> dict[Path, tuple[str, str]]:
    """(current text, regenerated text) of every file holding generated sections."""
    contents = sections()
    result = {}
    for name in FILES:
        path = ROOT / name
        text = path.read_text()
        result[path] = (text, replace_sections(text, contents, where=name))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args()
    stale = 0
    for path, (text, fresh) in regenerated().items():
        if text == fresh:
            continue
        stale += 1
        if args.check:
            name = str(path.relative_to(ROOT))
            sys.stdout.writelines(
                difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), name, name)
            )
        else:
            path.write_text(fresh)
            print(f"rewrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print(f"\n{stale} file(s) out of date: run `python scripts/gen_config_docs.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
