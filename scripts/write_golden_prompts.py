"""Write the golden prompt files (tests/golden/*.json): every message each stage sends the model.

Run this only to change a prompt deliberately, and say why in the commit: trained adapters and
stored evaluations depend on every byte of these prompts, and ``tests/test_golden_prompts.py``
fails on any difference. Spider scenarios need the shared data (``ROUTE_GRAPH_DATA``).

    python scripts/write_golden_prompts.py            # every scenario
    python scripts/write_golden_prompts.py NAME ...   # only these scenarios
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fakes import shared_data_dir
from tests.golden_prompts import GOLDEN_DIR, SCENARIOS, render_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios to write (default: all)")
    args = parser.parse_args(argv)
    known = {s.name for s in SCENARIOS}
    unknown = sorted(set(args.names) - known)
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(sorted(known))}")
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for scenario in SCENARIOS:
        if args.names and scenario.name not in args.names:
            continue
        if scenario.spider and shared_data_dir() is None:
            print(f"skipped {scenario.name}: no shared data (set ROUTE_GRAPH_DATA)", file=sys.stderr)
            continue
        path = GOLDEN_DIR / f"{scenario.name}.json"
        text = render_scenario(scenario)
        changed = not path.exists() or path.read_text(encoding="utf-8") != text
        path.write_text(text, encoding="utf-8")
        print(f"{'wrote' if changed else 'unchanged'} {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
