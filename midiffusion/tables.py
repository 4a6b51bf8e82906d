"""The run's tables: the long metrics table's summary (CSV, Markdown), the verdict and headline that rank
the zero-shot roads, the nnU-Nets' training table, per-contrast Dice tables and the preprocessing QC tables.

Also the orders the tables and figures share: methods (METHOD_ORDER), anatomies (the training one first)
and tissue classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from midiffusion.anatomy import TRAINING_ANATOMY
from midiffusion.io import InputError, atomic_path, read_json
from midiffusion.layout import TISSUE_CLASSES
from midiffusion.methods import METHOD_ORDER, METHODS, PRODUCERS
from midiffusion.metrics import LONG_COLUMNS


CLASS_ORDER = (*TISSUE_CLASSES.values(), "mean")
METRIC_LABELS = {"dice": "Dice", "corr": "corr", "psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE"}
DECIMALS = {"psnr": 2}  # every other metric: 3 decimals
GROUP = ["anatomy", "method", "source", "metric", "class"]


def _method_rank(method: str) -> tuple[int, str]:
    """Methods in METHOD_ORDER first, in that order; any others after, alphabetically."""
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def ordered_methods(methods: Sequence[str]) -> list[str]:
    """The distinct methods in the tables' and figures' order (METHOD_ORDER, then the others)."""
    return sorted(set(methods), key=_method_rank)


def _anatomy_rank(anatomy: str) -> tuple[bool, str]:
    """The training anatomy's test subjects (or a cohort without held-out anatomy, "") first."""
    return (anatomy not in ("", TRAINING_ANATOMY), anatomy)


def ordered_anatomies(long_df: pd.DataFrame) -> list[str]:
    """The table's anatomies, the training anatomy first."""
    return sorted(long_df["anatomy"].unique(), key=_anatomy_rank)


def normalise_long_table(long_df: pd.DataFrame) -> pd.DataFrame:
    """Check the long table's columns; class "" for image metrics (a CSV round trip gives NaN); anatomy
    "" where no subject's anatomy is given (a cohort without held-out anatomy)."""
    missing = [column for column in LONG_COLUMNS if column not in long_df.columns]
    if missing:
        raise InputError(f"metrics table: missing columns {', '.join(missing)}")
    anatomy = long_df["anatomy"].fillna("").astype(str) if "anatomy" in long_df else ""
    return long_df.assign(**{"class": long_df["class"].fillna("").astype(str), "anatomy": anatomy})


def tag_anatomy(long_df: pd.DataFrame, anatomies: Mapping[str, str]) -> pd.DataFrame:
    """The anatomy column from subject -> anatomy (anatomy.subject_anatomies); InputError if one is missing."""
    subjects = long_df["subject"].astype(str)
    missing = sorted(set(subjects) - set(anatomies))
    if missing:
        raise InputError(f"--anatomy: no anatomy given for subjects {missing}")
    return long_df.assign(anatomy=subjects.map(anatomies))


def summarise(long_df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample sd (ddof 1; NaN for one value) and n per method, source, metric and class.

    NaN values (e.g. Dice of a class absent from a subject) are left out of mean, sd and n.
    Rows sorted by method (METHOD_ORDER), source, metric, class.
    """
    long_df = normalise_long_table(long_df)
    summary = long_df.groupby(GROUP, sort=False)["value"].agg(mean="mean", sd="std", n="count").reset_index()
    rank = {method: i for i, method in enumerate(ordered_methods(summary["method"]))}
    anatomy_rank = {anatomy: i for i, anatomy in enumerate(ordered_anatomies(summary))}
    summary = summary.assign(_rank=summary["method"].map(rank), _anatomy=summary["anatomy"].map(anatomy_rank))
    order = ["_anatomy", "_rank", "source", "metric", "class"]
    return summary.sort_values(order).drop(columns=["_anatomy", "_rank"]).reset_index(drop=True)


def _format_cell(mean: float, sd: float, metric: str) -> str:
    if not np.isfinite(mean):
        return "∞" if mean == np.inf else "n/a"
    decimals = DECIMALS.get(metric, 3)
    spread = f"{sd:.{decimals}f}" if np.isfinite(sd) else "n/a"
    return f"{mean:.{decimals}f} ± {spread}"


def _column_order(key: tuple[str, str]) -> tuple[int, int, str]:
    """Dice classes first (CSF, GM, WM, mean), then corr, PSNR, SSIM, MAE, then any other metric."""
    metric, name = key
    metrics = list(METRIC_LABELS)
    metric_rank = metrics.index(metric) if metric in metrics else len(metrics)
    class_rank = CLASS_ORDER.index(name) if name in CLASS_ORDER else len(CLASS_ORDER)
    return (metric_rank, class_rank, f"{metric} {name}")


def markdown_table(long_df: pd.DataFrame) -> str:
    """Markdown table: a row per (anatomy x) method x source, a "mean ± sd" column per metric and class;
    the Anatomy column only where subjects' anatomies are given."""
    long_df = normalise_long_table(long_df)
    summary = summarise(long_df)
    subjects = long_df.groupby(["anatomy", "method", "source"])["subject"].nunique()
    keys = sorted(set(zip(summary["metric"], summary["class"])), key=_column_order)
    cells = {
        key: _format_cell(mean, sd, key[3])
        for key, mean, sd in zip(summary[GROUP].itertuples(index=False, name=None), summary["mean"], summary["sd"])
    }
    table = []
    for anatomy, method, source in dict.fromkeys(zip(summary["anatomy"], summary["method"], summary["source"])):
        row = {"Anatomy": anatomy, "Method": method, "Source": source, "n": subjects[(anatomy, method, source)]}
        for metric, name in keys:
            label = f"{METRIC_LABELS.get(metric, metric)} {name}".strip()
            row[label] = cells.get((anatomy, method, source, metric, name), "")
        table.append(row)
    return drop_blank_anatomy(pd.DataFrame(table)).to_markdown(index=False)


def drop_blank_anatomy(table: pd.DataFrame) -> pd.DataFrame:
    """Without the Anatomy column where no subject's anatomy is given."""
    return table.drop(columns="Anatomy") if (table["Anatomy"] == "").all() else table


def is_zero_shot(method: str) -> bool:
    """A road a zero-shot user can take: not a bound that reads the test subjects' real target images."""
    return method not in METHODS or PRODUCERS[METHODS[method].producer].kind != "target"


# An nnU-Net whose EMA validation pseudo Dice still rose by this much over the last quarter of its epochs
# has not levelled off: its budget, not its recipe, may be what limits it.
LEVEL_GAIN = 0.01


def curve_gain(curve: pd.DataFrame) -> float:
    """The rise of the EMA pseudo Dice over the last quarter of the epochs (at least one epoch back)."""
    ema = curve["ema_pseudo_dice"].to_numpy()
    back = max(1, len(ema) // 4)
    return float(ema[-1] - ema[max(0, len(ema) - 1 - back)])


def training_table(curves: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per segmenter (nnU-Net): epochs, final EMA pseudo Dice, its rise over the last quarter, levelled off."""
    return pd.DataFrame([{"Segmenter": name, "epochs": len(curve),
                          "final EMA pseudo Dice": f"{curve['ema_pseudo_dice'].iloc[-1]:.3f}",
                          "rise over the last quarter": f"{curve_gain(curve):+.3f}",
                          "levelled off": "yes" if curve_gain(curve) < LEVEL_GAIN else "no"}
                         for name, curve in curves.items()])


def _levelled(method: str, curves: Mapping[str, pd.DataFrame]) -> str:
    """yes / no: whether the road's nnU-Net levelled off; "" without its curve."""
    segmenter = METHODS[method].segmenter if method in METHODS else None
    if segmenter not in curves:
        return ""
    return "yes" if curve_gain(curves[segmenter]) < LEVEL_GAIN else "no"


def verdict_table(long_df: pd.DataFrame, curves: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per source contrast, every zero-shot road ranked by mean Dice: Dice per class, the gap to the
    best road, what a user must have to take it (methods.Method.needs) and, given the nnU-Nets' training
    curves (segmenter -> segment.training_curve's table), whether the road's nnU-Net levelled off."""
    dice = summarise(long_df)
    dice = dice[(dice["metric"] == "dice") & dice["method"].map(is_zero_shot)]
    if dice.empty:
        raise InputError("metrics table: no Dice of a zero-shot method to rank")
    wide = dice.pivot_table(index=["anatomy", "source", "method"], columns="class", values="mean")
    rows = []
    for anatomy in ordered_anatomies(dice):
        for source, group in wide.loc[anatomy].groupby(level="source"):
            ranked = group.droplevel("source").sort_values("mean", ascending=False)
            for rank, (method, values) in enumerate(ranked.iterrows(), start=1):
                rows.append({"Anatomy": anatomy, "Source": source, "Rank": rank, "Method": method,
                             **{f"Dice {name}": f"{values[name]:.3f}" for name in CLASS_ORDER if name in values},
                             "Gap to best": f"{values['mean'] - ranked['mean'].iloc[0]:+.3f}",
                             "Needs": METHODS[method].needs if method in METHODS else "",
                             **({"nnU-Net levelled off": _levelled(method, curves)} if curves else {})})
    return drop_blank_anatomy(pd.DataFrame(rows))


def paired_difference(a: pd.Series, b: pd.Series, confidence: float = 0.95) -> dict[str, float | str]:
    """a - b over the subjects both have (Series indexed by subject): mean, sd, n, the t interval of the mean
    at `confidence`, and "win" / "loss" where that interval excludes 0, "tie" where it does not (or n < 2)."""
    from scipy.stats import t

    difference = (a - b).dropna()
    n, mean = len(difference), float(difference.mean())
    sd = float(difference.std()) if n > 1 else float("nan")
    half = float(t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    call = "tie" if not n > 1 or abs(mean) <= half else ("win" if mean > 0 else "loss")
    return {"mean": mean, "sd": sd, "n": n, "low": mean - half, "high": mean + half, "call": call}


def headline_table(long_df: pd.DataFrame, method: str = "midiffusion",
                   curves: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per anatomy and source: the oracle, `method` and the best other zero-shot road (the highest mean Dice
    among the roads whose image is not `method`'s), their mean Dice (corr), and the per-subject paired Dice
    difference of `method` to that road with its 95 % t interval: a win, a tie or a loss. Given the
    nnU-Nets' curves, a road whose nnU-Net had not levelled off is marked so."""
    long_df = normalise_long_table(long_df)
    dice = long_df[(long_df["metric"] == "dice") & (long_df["class"] == "mean")]
    corr = long_df[long_df["metric"] == "corr"]
    producer = METHODS[method].producer
    rows = []
    for anatomy, source in sorted(set(zip(dice["anatomy"], dice["source"])), key=lambda k: (_anatomy_rank(k[0]), k[1])):
        group = dice[(dice["anatomy"] == anatomy) & (dice["source"] == source)]
        per_subject = group.pivot_table(index="subject", columns="method", values="value")
        if method not in per_subject:
            continue
        rivals = [m for m in per_subject if is_zero_shot(m) and METHODS.get(m) and METHODS[m].producer != producer]
        if not rivals:  # e.g. methods [oracle, midiffusion]: nothing to set beside it
            continue
        best = max(rivals, key=lambda m: per_subject[m].mean())
        diff = paired_difference(per_subject[method], per_subject[best])
        mean_corr = corr[(corr["anatomy"] == anatomy) & (corr["source"] == source)].groupby("method")["value"].mean()

        def cell(name: str) -> str:
            return f"{per_subject[name].mean():.3f} ({mean_corr.get(name, np.nan):.3f})" if name in per_subject else ""

        rows.append({"Anatomy": anatomy, "Source": source, "n": diff["n"], "oracle": cell("oracle"), method: cell(method),
                     "best other road": best + (" (nnU-Net not levelled off)"
                                                if curves and _levelled(best, curves) == "no" else ""),
                     "its Dice (corr)": cell(best),
                     "paired difference": f"{diff['mean']:+.3f} ± {diff['sd']:.3f}",
                     "95 % interval": f"[{diff['low']:+.3f}, {diff['high']:+.3f}]", "verdict": diff["call"]})
    if not rows:
        raise InputError(f"metrics table: no Dice of {method} to set beside the other roads")
    return drop_blank_anatomy(pd.DataFrame(rows))


def write_tables(long_df: pd.DataFrame, out_dir: str | Path,
                 curves: Mapping[str, pd.DataFrame] | None = None) -> dict[str, Path]:
    """Write metrics_long.csv, summary.csv, summary.md, verdict.md and headline.md into out_dir (atomically),
    and with the nnU-Nets' training curves (segmenter -> table) nnunet_training.md.

    Returns {"long": path, "summary": path, "markdown": path, "verdict": path, "headline": path[, "training": path]}.
    """
    out_dir = Path(out_dir)
    long_df = normalise_long_table(long_df)
    paths = {name: out_dir / file for name, file in (("long", "metrics_long.csv"), ("summary", "summary.csv"),
                                                     ("markdown", "summary.md"), ("verdict", "verdict.md"),
                                                     ("headline", "headline.md"))}
    with atomic_path(paths["long"]) as tmp:
        long_df.to_csv(tmp, index=False)
    with atomic_path(paths["summary"]) as tmp:
        summarise(long_df).to_csv(tmp, index=False)
    caption = ("Mean ± sd over the n test subjects; Dice of the nnU-Net segmentation against the "
               "ground-truth labels; corr (Pearson), PSNR, SSIM and MAE inside the brain mask against the real target.")
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(f"# Evaluation summary\n\n{caption}\n\n{markdown_table(long_df)}\n", encoding="utf-8")
    with atomic_path(paths["verdict"]) as tmp:
        tmp.write_text(verdict_table(long_df, curves).to_markdown(index=False) + "\n", encoding="utf-8")
    with atomic_path(paths["headline"]) as tmp:
        ran = "midiffusion" in set(long_df["method"])
        tmp.write_text(headline_table(long_df, curves=curves).to_markdown(index=False) + "\n" if ran else
                       "midiffusion was not among the methods run: no headline.\n", encoding="utf-8")
    if curves:
        paths["training"] = out_dir / "nnunet_training.md"
        with atomic_path(paths["training"]) as tmp:
            tmp.write_text(training_table(curves).to_markdown(index=False) + "\n", encoding="utf-8")
    return paths


def write_tables_from_csv(
    metrics: Sequence[str | Path], out_dir: str | Path, anatomies: Mapping[str, str] | None = None,
    curves: Mapping[str, str | Path] | None = None,
) -> dict[str, Path]:
    """Concatenate per-method long CSVs and write the long, summary and Markdown tables; `anatomies`
    (subject -> anatomy, where the cohort has a held-out anatomy) splits every row by anatomy; `curves`
    (segmenter -> its nnU-Net's training curve CSV) marks the roads whose nnU-Net had not levelled off."""
    long_df = pd.concat([pd.read_csv(path, keep_default_na=False, na_values=["NaN", "nan"], dtype={"subject": str})
                         for path in metrics])
    tables = {name: pd.read_csv(path) for name, path in (curves or {}).items()}
    return write_tables(tag_anatomy(long_df, anatomies) if anatomies else long_df, out_dir, tables)


def write_contrast_dice(
    records: Sequence[Mapping[str, Any]], csv_path: str | Path, markdown_path: str | Path,
    anatomies: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Dice records {subject, contrast, CSF, GM, WM, mean} as a long CSV (anatomy, subject, contrast,
    class, dice) and a Markdown summary, mean ± sd per contrast and class in the order the contrasts
    first appear; with `anatomies` (subject -> anatomy) a block of rows per anatomy, the training one first."""
    names = [*TISSUE_CLASSES.values(), "mean"]
    table = pd.DataFrame(
        [{"subject": r["subject"], "contrast": r["contrast"], "class": name, "dice": r[name]}
         for r in records for name in names],
        columns=["subject", "contrast", "class", "dice"],
    )
    table.insert(0, "anatomy", tag_anatomy(table, anatomies)["anatomy"] if anatomies else "")
    stats = table.groupby(["anatomy", "contrast", "class"], sort=False)["dice"].agg(["mean", "std"])
    summary = drop_blank_anatomy(pd.DataFrame([{
        "Anatomy": anatomy,
        "Contrast": contrast,
        **{f"Dice {name}": _format_cell(*stats.loc[(anatomy, contrast, name)], "dice") for name in names},
    } for anatomy in ordered_anatomies(table) for contrast in table["contrast"].unique()
        if (anatomy, contrast, names[0]) in stats.index]))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(summary.to_markdown(index=False) + "\n")
    return table


def qc_tables(inputs: Sequence[str | Path], registration_csv: str | Path, atropos_csv: str | Path) -> None:
    """Collect the preprocessing QC (qc.json per subject) into two CSVs: registration error per subject
    and source contrast (error_before_mm, error_after_mm), and Atropos' Dice per subject and class
    against the true labels. A table is empty (header only) when nothing was measurable (real data)."""
    registration, atropos = [], []
    for path in inputs:
        qc = read_json(path)
        subject = qc.pop("subject")
        for key, value in qc.items():
            if key.startswith("atropos_dice_"):
                atropos.append({"subject": subject, "class": key.removeprefix("atropos_dice_"), "dice": value})
            elif key.endswith("_error_before_mm"):
                source = key.removesuffix("_error_before_mm")
                registration.append({"subject": subject, "source": source, "error_before_mm": value,
                                     "error_after_mm": qc[f"{source}_error_after_mm"]})
    for records, columns, out_path in [
        (registration, ["subject", "source", "error_before_mm", "error_after_mm"], registration_csv),
        (atropos, ["subject", "class", "dice"], atropos_csv),
    ]:
        with atomic_path(out_path) as tmp:
            pd.DataFrame(records, columns=columns).to_csv(tmp, index=False, float_format="%.4f")
