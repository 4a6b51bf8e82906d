"""Figures (PNG): Dice box plots, the translation grid of images and segmentations, the sampler curve.

Figures are drawn on matplotlib's Agg canvas without pyplot, so no display or global backend
state is involved, and saved atomically at FIGURE_DPI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from midiffusion.io import InputError, atomic_path, check_same_grid, load_volume
from midiffusion.layout import TISSUE_CLASSES
from midiffusion.methods import REGISTRY
from midiffusion.tables import CLASS_ORDER, normalise_long_table, ordered_anatomies, ordered_methods


# Left to right from the source to the real target: the registry's grid methods, baselines first.
GRID_COLUMNS = ("source", *reversed([m.name for m in REGISTRY if m.in_grid]), "target")
LABEL_COLOURS = ("#1f77b4", "#2ca02c", "#d62728")  # CSF, GM, WM
SAMPLER_COLUMNS = ("sampler", "network_calls", "psnr", "seconds_per_slice")
FIGURE_DPI = 120


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
    dice = normalise_long_table(long_df)
    dice = dice[(dice["metric"] == "dice") & dice["value"].notna()]
    if dice.empty:
        raise InputError("metrics table: no Dice values to plot")
    panels = [(anatomy, source) for anatomy in ordered_anatomies(dice) for source in sorted(dice["source"].unique())]
    methods = ordered_methods(dice["method"])
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
