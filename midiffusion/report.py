"""Tables (CSV, Markdown) and figures (PNG) from the long metrics table and benchmark CSVs.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no display or global backend
state is involved, and saved atomically at FIGURE_DPI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from midiffusion.anatomy import TRAINING_ANATOMY
from midiffusion.io import InputError, atomic_path, check_same_grid, load_volume
from midiffusion.layout import TISSUE_CLASSES
from midiffusion.methods import METHOD_ORDER, METHODS, PRODUCERS, REGISTRY
from midiffusion.metrics import LONG_COLUMNS

# Left to right from the source to the real target: the registry's grid methods, baselines first.
GRID_COLUMNS = ("source", *reversed([m.name for m in REGISTRY if m.in_grid]), "target")
CLASS_ORDER = (*TISSUE_CLASSES.values(), "mean")
METRIC_LABELS = {"dice": "Dice", "corr": "corr", "psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE"}
DECIMALS = {"psnr": 2}  # every other metric: 3 decimals
LABEL_COLOURS = ("#1f77b4", "#2ca02c", "#d62728")  # CSF, GM, WM
SAMPLER_COLUMNS = ("sampler", "network_calls", "psnr", "seconds_per_slice")
FIGURE_DPI = 120
GROUP = ["anatomy", "method", "source", "metric", "class"]


def _method_rank(method: str) -> tuple[int, str]:
    """Methods in METHOD_ORDER first, in that order; any others after, alphabetically."""
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def _ordered_methods(methods: Sequence[str]) -> list[str]:
    return sorted(set(methods), key=_method_rank)


def _anatomy_rank(anatomy: str) -> tuple[bool, str]:
    """The training anatomy's test subjects (or a cohort without held-out anatomy, "") first."""
    return (anatomy not in ("", TRAINING_ANATOMY), anatomy)


def _anatomies(long_df: pd.DataFrame) -> list[str]:
    return sorted(long_df["anatomy"].unique(), key=_anatomy_rank)


def _normalise(long_df: pd.DataFrame) -> pd.DataFrame:
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
    long_df = _normalise(long_df)
    summary = long_df.groupby(GROUP, sort=False)["value"].agg(mean="mean", sd="std", n="count").reset_index()
    rank = {method: i for i, method in enumerate(_ordered_methods(summary["method"]))}
    anatomy_rank = {anatomy: i for i, anatomy in enumerate(_anatomies(summary))}
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
    long_df = _normalise(long_df)
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
    return _drop_blank_anatomy(pd.DataFrame(table)).to_markdown(index=False)


def _drop_blank_anatomy(table: pd.DataFrame) -> pd.DataFrame:
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
    for anatomy in _anatomies(dice):
        for source, group in wide.loc[anatomy].groupby(level="source"):
            ranked = group.droplevel("source").sort_values("mean", ascending=False)
            for rank, (method, values) in enumerate(ranked.iterrows(), start=1):
                rows.append({"Anatomy": anatomy, "Source": source, "Rank": rank, "Method": method,
                             **{f"Dice {name}": f"{values[name]:.3f}" for name in CLASS_ORDER if name in values},
                             "Gap to best": f"{values['mean'] - ranked['mean'].iloc[0]:+.3f}",
                             "Needs": METHODS[method].needs if method in METHODS else "",
                             **({"nnU-Net levelled off": _levelled(method, curves)} if curves else {})})
    return _drop_blank_anatomy(pd.DataFrame(rows))


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
    long_df = _normalise(long_df)
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
    return _drop_blank_anatomy(pd.DataFrame(rows))


def write_tables(long_df: pd.DataFrame, out_dir: str | Path,
                 curves: Mapping[str, pd.DataFrame] | None = None) -> dict[str, Path]:
    """Write metrics_long.csv, summary.csv, summary.md, verdict.md and headline.md into out_dir (atomically),
    and with the nnU-Nets' training curves (segmenter -> table) nnunet_training.md.

    Returns {"long": path, "summary": path, "markdown": path, "verdict": path, "headline": path[, "training": path]}.
    """
    out_dir = Path(out_dir)
    long_df = _normalise(long_df)
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


def _save(figure: Figure, out_path: str | Path, rect: tuple[float, ...] = (0, 0, 1, 1)) -> Path:
    """Tight layout within `rect` (figure fraction), then an atomic PNG write."""
    FigureCanvasAgg(figure)
    figure.tight_layout(rect=rect)
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=FIGURE_DPI, format="png")
    return Path(out_path)


def plot_dice(long_df: pd.DataFrame, out_path: str | Path) -> Path:
    """Box plots with the per-subject points: Dice per class (x) and method (colour), a panel per source
    (and anatomy, where given)."""
    dice = _normalise(long_df)
    dice = dice[(dice["metric"] == "dice") & dice["value"].notna()]
    if dice.empty:
        raise InputError("metrics table: no Dice values to plot")
    panels = [(anatomy, source) for anatomy in _anatomies(dice) for source in sorted(dice["source"].unique())]
    methods = _ordered_methods(dice["method"])
    classes = [name for name in CLASS_ORDER if name in set(dice["class"])]
    width = 0.8 / len(methods)
    jitter = np.random.default_rng(0)  # fixed, so the figure is reproducible
    colours = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    legend_rows = -(-len(methods) // 6)
    figure = Figure(figsize=((3 + 0.25 * len(methods)) * len(panels), 4 + 0.25 * legend_rows))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (anatomy, source) in zip(axes, panels):
        panel = dice[(dice["anatomy"] == anatomy) & (dice["source"] == source)]
        for m, method in enumerate(methods):
            colour = colours[m]
            for c, name in enumerate(classes):
                values = panel.loc[(panel["method"] == method) & (panel["class"] == name), "value"].to_numpy()
                if values.size == 0:
                    continue
                x = c - 0.4 + width * (m + 0.5)
                ax.boxplot(values, positions=[x], widths=width * 0.8, showfliers=False,
                           medianprops={"color": colour}, boxprops={"color": colour},
                           whiskerprops={"color": colour}, capprops={"color": colour})
                ax.scatter(x + jitter.uniform(-0.2, 0.2, values.size) * width, values, s=10,
                           color=colour, alpha=0.7, label=method if c == 0 else None)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_xlim(-0.5, len(classes) - 0.5)
        ax.set_ylim(0, 1.02)  # the full Dice range, so that figures compare at a glance
        ax.set_title(f"Source contrast {source}" + (f"\n{anatomy} anatomy" if anatomy else ""))
        ax.set_xlabel("Tissue class")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Dice")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=-(-len(methods) // legend_rows), frameon=False)
    figure.suptitle("Dice of the nnU-Net segmentation per method and tissue class")
    return _save(figure, out_path, rect=(0, 0.06 * legend_rows + 0.01, 1, 1))  # room for the legend below


@dataclass
class GridRow:
    """One source contrast of the translation grid: volumes by column name (see GRID_COLUMNS).

    images: column -> image path (X, Y, Z); segmentations: column -> label map path on the
    same grid, drawn coloured on top of that column's image in a second row.
    """

    source: str
    images: dict[str, Path]
    segmentations: dict[str, Path] = field(default_factory=dict)


def _mid_axial_slices(rows: Sequence[GridRow]) -> dict[Path, np.ndarray]:
    """Load every volume of the grid, check they share one grid, return path -> mid axial slice.

    Slices are (Y, X), rotated so that anterior is up; the same index for all volumes.
    """
    paths = {Path(p) for row in rows for p in (*row.images.values(), *row.segmentations.values())}
    if not paths:
        raise InputError("translation grid: no volumes given")
    volumes = [load_volume(path) for path in sorted(paths)]
    check_same_grid(volumes)
    index = volumes[0].data.shape[2] // 2
    return {volume.path: np.rot90(volume.data[:, :, index]) for volume in volumes}


def _show_image(ax, image: np.ndarray) -> None:
    low, high = np.percentile(image, [0.5, 99.5])  # per image: the baselines are not normalised alike
    ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")


def _show_labels(ax, labels: np.ndarray) -> None:
    labels = np.rint(labels)
    ax.imshow(np.ma.masked_where(labels == 0, labels), cmap=ListedColormap(LABEL_COLOURS),
              vmin=0.5, vmax=len(LABEL_COLOURS) + 0.5, alpha=0.45, interpolation="nearest")


def plot_translation_grid(
    rows: Sequence[GridRow],
    out_path: str | Path,
    columns: Sequence[str] = GRID_COLUMNS,
    title: str = "Translations and nnU-Net segmentations (mid axial slice)",
) -> Path:
    """Image grid: per source contrast an image row and a segmentation-overlay row.

    Columns in the given order; columns for which no row has an image are skipped, and a cell
    a row lacks is left blank. All volumes must share one grid (InputError otherwise) and
    show the same axial slice, the middle one.
    """
    slices = _mid_axial_slices(rows)
    shown = [column for column in columns if any(column in row.images for row in rows)]
    if not shown:
        raise InputError(f"translation grid: no row has an image for any of the columns {', '.join(columns)}")
    figure = Figure(figsize=(2.2 * len(shown), 2.3 * 2 * len(rows)))
    axes = figure.subplots(2 * len(rows), len(shown), squeeze=False)
    for r, row in enumerate(rows):
        for c, column in enumerate(shown):
            image_ax, label_ax = axes[2 * r, c], axes[2 * r + 1, c]
            image_ax.set_title(column if r == 0 else "")
            if column not in row.images:
                continue
            image = slices[Path(row.images[column])]
            _show_image(image_ax, image)
            if column in row.segmentations:
                _show_image(label_ax, image)
                _show_labels(label_ax, slices[Path(row.segmentations[column])])
        axes[2 * r, 0].set_ylabel(f"{row.source}\nimage")
        axes[2 * r + 1, 0].set_ylabel(f"{row.source}\nsegmentation")
    for ax in axes.flat:  # keep the axes (for the row labels), hide ticks and frames
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    legend = [Patch(color=colour, alpha=0.6, label=name) for colour, name in zip(LABEL_COLOURS, TISSUE_CLASSES.values())]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False)
    figure.suptitle(title)
    return _save(figure, out_path, rect=(0, 0.04, 1, 1))  # room for the legend at the bottom


def plot_sampler_curve(csv_path: str | Path, out_path: str | Path) -> Path:
    """Sampling benchmark against UNet calls per slice (log x): mean Dice when the table has it
    (column dice_mean), PSNR, and seconds per slice; one line per sampler (and device, if given).

    csv_path: columns sampler, network_calls, psnr, seconds_per_slice, one row per setting.
    """
    table = pd.read_csv(csv_path)
    missing = [column for column in SAMPLER_COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"{csv_path}: missing columns {', '.join(missing)}")
    panels = [("dice_mean", "Mean Dice (nnU-Net)")] if "dice_mean" in table.columns else []
    panels += [("psnr", "PSNR in the brain (dB)"), ("seconds_per_slice", "Seconds per slice")]
    keys = ["sampler", "device"] if "device" in table.columns else ["sampler"]
    figure = Figure(figsize=(4 * len(panels), 3.6))
    axes = figure.subplots(1, len(panels))
    for i, (key, group) in enumerate(table.sort_values("network_calls").groupby(keys, sort=True)):
        label = " on ".join(str(part) for part in key)
        for ax, (column, _) in zip(axes, panels):
            ax.plot(group["network_calls"], group[column], "o-", color=f"C{i}", label=label)
    for ax, (column, title) in zip(axes, panels):
        ax.set(xscale="log", xlabel="UNet calls per slice", title=title)
        ax.grid(alpha=0.3)
    if panels[0][0] == "dice_mean":
        # At least 0.1 of Dice on the axis, so that differences of 0.01 do not look like a cliff.
        low, high = table["dice_mean"].min(), table["dice_mean"].max()
        middle = (low + high) / 2
        axes[0].set_ylim(min(low, middle - 0.05) - 0.005, max(high, middle + 0.05) + 0.005)
    axes[-1].set_yscale("log")
    axes[0].legend(fontsize="small")
    return _save(figure, out_path)


def qc_tables(inputs: Sequence[str | Path], registration_csv: str | Path, atropos_csv: str | Path) -> None:
    """Collect the preprocessing QC (qc.json per subject) into two CSVs: registration error per subject
    and source contrast (error_before_mm, error_after_mm), and Atropos' Dice per subject and class
    against the true labels. A table is empty (header only) when nothing was measurable (real data)."""
    from midiffusion.io import read_json

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


def evaluate_cases(method: str, cases: Sequence[tuple[str, ...]], out_path: str | Path) -> pd.DataFrame:
    """Metrics of one method's test cases, each (subject, source, segmentation, labels, image,
    reference, mask), as a long CSV (metrics.LONG_COLUMNS)."""
    from midiffusion.metrics import collect_metrics, evaluate_case

    rows = [
        {"subject": subject, "source": source, "method": method, **evaluate_case(*paths)}
        for subject, source, *paths in cases
    ]
    table = collect_metrics(rows)
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)
    return table


def intensity_bound_tables(
    cases: Sequence[tuple[str, str, str, str, str]], csv_path: str | Path, markdown_path: str | Path
) -> pd.DataFrame:
    """metrics.intensity_bound_dice of each case (subject, contrast, image, labels, brain mask),
    written by write_contrast_dice."""
    from midiffusion.io import check_mask
    from midiffusion.metrics import intensity_bound_dice

    records = []
    for subject, contrast, *paths in cases:
        image, labels, mask = volumes = [load_volume(path) for path in paths]
        check_same_grid(volumes)
        bound = intensity_bound_dice(image.data, labels.data, check_mask(mask.data, mask.path))
        records.append({"subject": subject, "contrast": contrast, **bound})
    return write_contrast_dice(records, csv_path, markdown_path)


def intensity_bound_corr_tables(
    cases: Sequence[tuple[str, str, str, str, str]], metrics_path: str | Path, csv_path: str | Path,
    markdown_path: str | Path,
) -> pd.DataFrame:
    """metrics.intensity_bound_corr of each case (subject, source, image, reference, mask): how well the
    best voxelwise intensity map of the source could follow the real target, beside the correlation
    each translation of the run reached (the long metrics table at `metrics_path`; the methods whose
    image depends on the source, segmented by the target nnU-Net: one column per image). A translation
    past the bound uses more than the source's intensities. The CSV has a row per subject and source,
    the Markdown the means per anatomy and source."""
    from midiffusion.io import check_mask
    from midiffusion.metrics import intensity_bound_corr

    metrics = _normalise(pd.read_csv(metrics_path, dtype={"subject": str}))
    corr = metrics[(metrics["metric"] == "corr") & metrics["method"].map(_is_translation)]
    methods = _ordered_methods(corr["method"])
    reached = corr.set_index(["subject", "source", "method"])["value"]
    anatomies = metrics.groupby("subject")["anatomy"].first()
    rows = []
    for subject, source, *paths in cases:
        if subject not in anatomies:
            raise InputError(f"{metrics_path}: no metrics of test subject {subject}; is the table stale?")
        image, reference, mask = volumes = [load_volume(path) for path in paths]
        check_same_grid(volumes)
        bound = intensity_bound_corr(image.data, reference.data, check_mask(mask.data, mask.path))
        rows.append({"anatomy": anatomies[subject], "subject": subject, "source": source, "bound": bound,
                     **{m: reached.get((subject, source, m), np.nan) for m in methods}})
    table = pd.DataFrame(rows, columns=["anatomy", "subject", "source", "bound", *methods])
    means = table.groupby(["anatomy", "source"], sort=False)[["bound", *methods]].mean().reset_index()
    means = _drop_blank_anatomy(means.rename(
        columns={"anatomy": "Anatomy", "source": "Source", "bound": "best intensity map (bound)"}))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(means.to_markdown(index=False, floatfmt=".3f") + "\n")
    return means


def _is_translation(method: str) -> bool:
    """A method whose image is a function of the source, segmented by the target nnU-Net."""
    return method in METHODS and METHODS[method].uses_source and METHODS[method].segmenter == "target"


def segmentation_dice_tables(
    cases: Sequence[tuple[str, str, str, str]], csv_path: str | Path, markdown_path: str | Path
) -> pd.DataFrame:
    """metrics.dice_per_class of each case (subject, contrast, segmentation, labels), written by
    write_contrast_dice."""
    from midiffusion.metrics import dice_per_class

    records = []
    for subject, contrast, *paths in cases:
        segmentation, labels = volumes = [load_volume(path) for path in paths]
        check_same_grid(volumes)
        records.append({"subject": subject, "contrast": contrast, **dice_per_class(segmentation.data, labels.data)})
    return write_contrast_dice(records, csv_path, markdown_path)


def write_contrast_dice(
    records: Sequence[Mapping[str, Any]], csv_path: str | Path, markdown_path: str | Path
) -> pd.DataFrame:
    """Dice records {subject, contrast, CSF, GM, WM, mean} as a long CSV (subject, contrast, class,
    dice) and a Markdown summary, mean ± sd per contrast and class in the order the contrasts first
    appear."""
    names = [*TISSUE_CLASSES.values(), "mean"]
    table = pd.DataFrame(
        [{"subject": r["subject"], "contrast": r["contrast"], "class": name, "dice": r[name]}
         for r in records for name in names],
        columns=["subject", "contrast", "class", "dice"],
    )
    stats = table.groupby(["contrast", "class"], sort=False)["dice"].agg(["mean", "std"])
    summary = pd.DataFrame([{
        "Contrast": contrast,
        **{f"Dice {name}": _format_cell(*stats.loc[(contrast, name)], "dice") for name in names},
    } for contrast in table["contrast"].unique()])
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(summary.to_markdown(index=False) + "\n")
    return table


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


def make_figure(kind: str, inputs: Sequence[str], out_path: str | Path, subject: str | None = None) -> Path:
    """The workflow's figures. dice: inputs = [metrics_long.csv]; sampler: inputs = [sampling.csv];
    grid: inputs = ["SOURCE/COLUMN/image=PATH" or "SOURCE/COLUMN/segmentation=PATH", ...]."""
    if kind == "dice":
        return plot_dice(pd.read_csv(inputs[0], keep_default_na=False, na_values=["NaN", "nan"]), out_path)
    if kind == "sampler":
        return plot_sampler_curve(inputs[0], out_path)
    rows: dict[str, GridRow] = {}
    for item in inputs:
        key, _, path = item.partition("=")
        source, column, what = key.split("/")
        row = rows.setdefault(source, GridRow(source, {}, {}))
        (row.images if what == "image" else row.segmentations)[column] = Path(path)
    title = f"Subject {subject}: source | translations | real target" if subject else None
    return plot_translation_grid(list(rows.values()), out_path, **({"title": title} if title else {}))
