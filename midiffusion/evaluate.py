"""The evaluation: load each test case's volumes, check they share one grid, score them (metrics.py)
and write the scores as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from midiffusion.io import InputError, atomic_path, check_mask, check_same_grid, load_volume
from midiffusion.methods import METHODS
from midiffusion.metrics import (
    collect_metrics, dice_per_class, evaluate_case, intensity_bound_corr, intensity_bound_dice,
)
from midiffusion.tables import drop_blank_anatomy, normalise_long_table, ordered_methods, write_contrast_dice


def evaluate_cases(method: str, cases: Sequence[tuple[str, ...]], out_path: str | Path) -> pd.DataFrame:
    """Metrics of one method's test cases, each (subject, source, segmentation, labels, image,
    reference, mask), as a long CSV (metrics.LONG_COLUMNS)."""
    rows = [
        {"subject": subject, "source": source, "method": method, **evaluate_case(*paths)}
        for subject, source, *paths in cases
    ]
    table = collect_metrics(rows)
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)
    return table


def intensity_bound_tables(
    cases: Sequence[tuple[str, str, str, str, str]], csv_path: str | Path, markdown_path: str | Path,
    anatomies: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """metrics.intensity_bound_dice of each case (subject, contrast, image, labels, brain mask),
    written by write_contrast_dice (per anatomy with `anatomies`, subject -> anatomy)."""
    records = []
    for subject, contrast, *paths in cases:
        image, labels, mask = volumes = [load_volume(path) for path in paths]
        check_same_grid(volumes)
        bound = intensity_bound_dice(image.data, labels.data, check_mask(mask.data, mask.path))
        records.append({"subject": subject, "contrast": contrast, **bound})
    return write_contrast_dice(records, csv_path, markdown_path, anatomies)


def segmentation_dice_tables(
    cases: Sequence[tuple[str, str, str, str]], csv_path: str | Path, markdown_path: str | Path,
    anatomies: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """metrics.dice_per_class of each case (subject, contrast, segmentation, labels), written by
    write_contrast_dice (per anatomy with `anatomies`, subject -> anatomy)."""
    records = []
    for subject, contrast, *paths in cases:
        segmentation, labels = volumes = [load_volume(path) for path in paths]
        check_same_grid(volumes)
        records.append({"subject": subject, "contrast": contrast, **dice_per_class(segmentation.data, labels.data)})
    return write_contrast_dice(records, csv_path, markdown_path, anatomies)


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
    metrics = normalise_long_table(pd.read_csv(metrics_path, dtype={"subject": str}))
    corr = metrics[(metrics["metric"] == "corr") & metrics["method"].map(_is_translation)]
    methods = ordered_methods(corr["method"])
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
    means = drop_blank_anatomy(means.rename(
        columns={"anatomy": "Anatomy", "source": "Source", "bound": "best intensity map (bound)"}))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(means.to_markdown(index=False, floatfmt=".3f") + "\n")
    return means


def _is_translation(method: str) -> bool:
    """A method whose image is a function of the source, segmented by the target nnU-Net."""
    return method in METHODS and METHODS[method].uses_source and METHODS[method].segmenter == "target"
