"""Subject discovery in the IXI and BIDS layouts, on tiny files written with the real naming, and the split."""

import numpy as np
import pytest

from midiffusion.cohort import find_subjects, split_subjects
from midiffusion.layout import bids_image
from midiffusion.io import InputError, save_volume

CONTRASTS = ["T1w", "PDw", "T2w"]


def _touch(path):
    save_volume(path, np.ones((4, 4, 4)), np.eye(4))


def test_ixi_subjects_with_every_contrast_are_used_and_the_rest_listed(tmp_path):
    for name in ["IXI002-Guys-0828-T1", "IXI002-Guys-0828-T2", "IXI002-Guys-0828-PD",
                 "IXI012-HH-1211-T1", "IXI012-HH-1211-T2", "IXI012-HH-1211-PD",
                 "IXI013-HH-1212-T1", "IXI013-HH-1212-T2"]:  # IXI013 has no PD
        _touch(tmp_path / f"{name}.nii.gz")
    (tmp_path / "IXI002-Guys-0828-MRA.nii.gz").write_text("ignored")
    cohort = find_subjects("ixi", tmp_path, CONTRASTS)
    assert sorted(cohort.images) == ["002", "012"]
    assert cohort.skipped == {"013": ["PDw"]}
    assert "1 subject(s) skipped" in cohort.skipped_message(tmp_path)
    assert cohort.images["012"]["PDw"].name == "IXI012-HH-1211-PD.nii.gz"


def test_bids_with_and_without_sessions(tmp_path):
    for subject, session in [("01", None), ("02", "ses-1"), ("02", "ses-2")]:
        anat = tmp_path / f"sub-{subject}" / (session or "") / "anat"
        for contrast in CONTRASTS:
            tag = f"_{session}" if session else ""
            _touch(anat / f"sub-{subject}{tag}_{contrast}.nii.gz")
    found = find_subjects("bids", tmp_path, CONTRASTS).images
    assert sorted(found) == ["01", "02"]
    assert "ses-1" in str(found["02"]["T1w"])  # the first session
    assert found["01"]["T2w"] == bids_image(tmp_path, "01", "T2w")


def test_missing_folder_and_empty_cohort_are_clear(tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        find_subjects("bids", tmp_path / "nope", CONTRASTS)
    with pytest.raises(InputError, match="no subject with all of"):
        find_subjects("ixi", tmp_path, CONTRASTS)


def test_split_is_reproducible_and_disjoint():
    subjects = [f"{i:02d}" for i in range(1, 11)]
    split = split_subjects(subjects, 3, seed=4)
    assert split == split_subjects(list(reversed(subjects)), 3, seed=4)
    assert len(split.test) == 3 and not set(split.test) & set(split.train)
    assert sorted(split.train + split.test) == subjects
    assert split != split_subjects(subjects, 3, seed=5)
    with pytest.raises(InputError, match="split.n_test"):
        split_subjects(subjects, 10, seed=0)
