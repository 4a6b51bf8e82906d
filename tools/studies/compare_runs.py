"""Two runs side by side: the mean Dice of every method in each, their difference and each run's ranking.

Two runs of the same default give the run-to-run spread (below); a run and its copy at another budget
(`experiments/rivals_long.yaml`) give what the budget changes (results/tables/rivals_long/budget.md).

Each nnU-Net's training depends on its seed (`nnunet.seed`; before it was seeded, on chance), so two
runs with different seeds give every segmenter, and so every method's Dice, a slightly different
value. This table says how large that spread is, and how much of the verdict's ranking (the zero-shot
roads per anatomy and source, bounds left out) survives it: a gap between two methods smaller than the
spread is not a finding.

    git show <commit>:results/tables/summary.csv > /tmp/run_a.csv
    python tools/studies/compare_runs.py /tmp/run_a.csv results/tables/summary.csv --names "run A" "run B" \
        --out-md results/tables/run_spread.md
    python tools/studies/compare_runs.py results/tables/start_study/summary.csv \
        results/tables/rivals_long/summary.csv --names "20 epochs" "100 epochs" --out-md results/tables/rivals_long/budget.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from midiffusion.io import atomic_path
from midiffusion.tables import is_zero_shot

KEYS = ["anatomy", "source", "method"]


def mean_dice(summary: Path) -> pd.Series:
    """Mean Dice over CSF, GM and WM per (anatomy, source, method) of a run's summary.csv."""
    table = pd.read_csv(summary)
    missing = {*KEYS, "metric", "class", "mean"} - set(table.columns)
    if missing:
        raise SystemExit(f"{summary}: not a summary.csv (no columns {sorted(missing)})")
    dice = table[(table["metric"] == "dice") & (table["class"] == "mean")]
    return dice.set_index(KEYS)["mean"]


def spread(a: pd.Series, b: pd.Series, names: tuple[str, str]) -> pd.DataFrame:
    """Both runs' mean Dice, the difference and each run's rank of the zero-shot roads within its anatomy
    and source (0 for the bounds, which the verdict does not rank)."""
    table = pd.DataFrame({names[0]: a, names[1]: b}).dropna()
    roads = table.index.get_level_values("method").map(is_zero_shot)
    table["difference"] = table[names[1]] - table[names[0]]
    for name in names:
        ranks = table[roads].groupby(level=["anatomy", "source"])[name].rank(ascending=False)
        table[f"rank {name}"] = ranks.reindex(table.index).fillna(0).astype(int)
    return table.sort_values(["anatomy", "source", f"rank {names[1]}"]).reset_index()


def places_agreeing(table: pd.DataFrame, names: tuple[str, str]) -> pd.Series:
    """Per anatomy and source, how many places from the top of the verdict both runs give to the same road."""
    def leading(group: pd.DataFrame) -> int:
        order = [group[group[f"rank {name}"] > 0].sort_values(f"rank {name}")["method"].tolist() for name in names]
        return next((k for k, (x, y) in enumerate(zip(*order)) if x != y), len(order[0]))
    return table.groupby(["anatomy", "source"]).apply(leading, include_groups=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", type=Path, nargs=2, help="two runs' results/tables/summary.csv")
    parser.add_argument("--names", nargs=2, default=["run A", "run B"])
    parser.add_argument("--out-md", type=Path)
    args = parser.parse_args()
    names = tuple(args.names)
    table = spread(mean_dice(args.summaries[0]), mean_dice(args.summaries[1]), names)
    agree = places_agreeing(table, names)
    text = table.to_markdown(index=False, floatfmt=".3f")
    places = "; ".join(f"{anatomy} {source}: {n}" for (anatomy, source), n in agree.items())
    footer = (f"\n\nLargest difference {table['difference'].abs().max():.3f}. Places of the verdict, from the top, "
              f"that both runs give to the same road: {places}.\n")
    print(text + footer)
    if args.out_md:
        with atomic_path(args.out_md) as tmp:
            tmp.write_text(text + footer)


if __name__ == "__main__":
    main()
