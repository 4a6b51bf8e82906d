"""Copy the default run's Markdown tables from results/tables/ into the documents that show them, each
between its `<!-- NAME:start -->` and `<!-- NAME:end -->` markers (DOCUMENTS). Usage:
python scripts/readme_results.py [--check] (--check: exit 1 when a document's table differs from its
results/tables file, change nothing)."""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Document (relative to ROOT) -> {marker NAME: the results table copied between its markers}.
DOCUMENTS = {
    "README.md": {"six_held_out_headline": "results/tables/six_held_out/headline.md"},
    "docs/results.md": {
        "headline": "results/tables/headline.md",
        "summary": "results/tables/summary.md",
        "verdict": "results/tables/verdict.md",
        "intensity_bound": "results/tables/intensity_bound.md",
        "intensity_bound_corr": "results/tables/intensity_bound_corr.md",
        "real_contrast": "results/tables/real_contrast.md",
        "six_held_out_headline": "results/tables/six_held_out/headline.md",
        "six_held_out_verdict": "results/tables/six_held_out/verdict.md",
        "six_held_out_nnunet_training": "results/tables/six_held_out/nnunet_training.md",
        "six_held_out_supervised_bound": "results/tables/six_held_out/supervised_bound.md",
        "study_headline": "results/tables/start_study/headline.md",
        "study_verdict": "results/tables/start_study/verdict.md",
        "study_supervised_bound": "results/tables/start_study/supervised_bound.md",
        "study_nnunet_training": "results/tables/start_study/nnunet_training.md",
        "rivals_long_nnunet_training": "results/tables/rivals_long/nnunet_training.md",
        "rivals_long_headline": "results/tables/rivals_long/headline.md",
        "rivals_long_budget": "results/tables/rivals_long/budget.md",
        "rivals_long_supervised_bound": "results/tables/rivals_long/supervised_bound.md",
        "source_monotonicity": "results/tables/source_monotonicity.md",
        "dir_headline": "results/tables/dir/headline.md",
        "dir_verdict": "results/tables/dir/verdict.md",
        "dir_intensity_bound_corr": "results/tables/dir/intensity_bound_corr.md",
        "dir_supervised_bound": "results/tables/dir/supervised_bound.md",
        "strong_aug_100_nnunet_training": "results/tables/strong_aug_100/nnunet_training.md",
        "strong_aug_100_headline": "results/tables/strong_aug_100/headline.md",
        "domain_rand_plateau_nnunet_training": "results/tables/domain_rand_plateau/nnunet_training.md",
        "domain_rand_plateau_headline": "results/tables/domain_rand_plateau/headline.md",
        "same_budget_300_nnunet_training": "results/tables/strong_aug_300/nnunet_training.md",
        "same_budget_300_headline": "results/tables/strong_aug_300/headline.md",
    },
    "docs/history.md": {
        "phantom_information": "results/tables/phantom_information.md",
        "supervised_bound": "results/tables/supervised_bound.md",
        "segmenter_budget": "results/tables/segmenter_budget.md",
    },
}


def readme_with_table(readme: str, name: str, table_md: str, document: str = "README.md") -> str:
    """Document text with a Markdown table (without its heading, if any) between NAME's markers."""
    markers = re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.DOTALL)
    if not markers.search(readme):
        raise SystemExit(f"{document}: {name} markers not found")
    table = table_md.split("\n", 1)[1].strip() if table_md.startswith("#") else table_md.strip()
    return markers.sub(lambda match: match.group(1) + table + match.group(2), readme)


def document_with_tables(text: str, document: str, root: Path = ROOT) -> str:
    """The text of `document` (a key of DOCUMENTS) with each of its tables copied in from under root."""
    for name, path in DOCUMENTS[document].items():
        text = readme_with_table(text, name, (root / path).read_text(), document)
    return text


def readme_with_tables(readme: str, root: Path = ROOT) -> str:
    """README text with every table it shows copied in from under root."""
    return document_with_tables(readme, "README.md", root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for document in DOCUMENTS:
        path = ROOT / document
        text = path.read_text()
        updated = document_with_tables(text, document)
        if updated == text:
            continue
        stale.append(document)
        if not args.check:
            path.write_text(updated)
    if args.check and stale:
        sys.exit(f"{', '.join(stale)}: a results table differs from results/tables")


if __name__ == "__main__":
    main()
