"""Copy the default run's summary table (results/tables/summary.md) into README.md between the
`<!-- summary:start -->` and `<!-- summary:end -->` markers. Usage: python scripts/readme_results.py [--check]
(--check: exit 1 when README's table differs from results/tables/summary.md, change nothing)."""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = re.compile(r"(<!-- summary:start -->\n).*?(\n<!-- summary:end -->)", re.DOTALL)


def readme_with_summary(readme: str, summary_md: str) -> str:
    """README text with the summary table (summary.md without its heading) between the markers."""
    if not MARKERS.search(readme):
        raise SystemExit("README.md: summary markers not found")
    table = summary_md.split("\n", 1)[1].strip() if summary_md.startswith("#") else summary_md.strip()
    return MARKERS.sub(lambda match: match.group(1) + table + match.group(2), readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    updated = readme_with_summary(readme, (ROOT / "results/tables/summary.md").read_text())
    if args.check:
        sys.exit(0 if updated == readme else "README.md: results table differs from results/tables/summary.md")
    readme_path.write_text(updated)


if __name__ == "__main__":
    main()
