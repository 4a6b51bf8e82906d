"""Copy the default run's Markdown tables into README.md, each between its `<!-- NAME:start -->` and
`<!-- NAME:end -->` markers (NAME: summary, intensity_bound, supervised_bound). Usage: python scripts/readme_results.py
[--check] (--check: exit 1 when a README table differs from its results/tables file, change nothing)."""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "summary": "results/tables/summary.md",
    "intensity_bound": "results/tables/intensity_bound.md",
    "supervised_bound": "results/tables/supervised_bound.md",
}


def readme_with_table(readme: str, name: str, table_md: str) -> str:
    """README text with a Markdown table (without its heading, if any) between NAME's markers."""
    markers = re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.DOTALL)
    if not markers.search(readme):
        raise SystemExit(f"README.md: {name} markers not found")
    table = table_md.split("\n", 1)[1].strip() if table_md.startswith("#") else table_md.strip()
    return markers.sub(lambda match: match.group(1) + table + match.group(2), readme)


def readme_with_tables(readme: str, root: Path = ROOT) -> str:
    """README text with every table of TABLES copied in from under root."""
    for name, path in TABLES.items():
        readme = readme_with_table(readme, name, (root / path).read_text())
    return readme


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    updated = readme_with_tables(readme)
    if args.check:
        sys.exit(0 if updated == readme else "README.md: a results table differs from results/tables")
    readme_path.write_text(updated)


if __name__ == "__main__":
    main()
