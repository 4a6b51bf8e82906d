"""Subject discovery in the IXI and BIDS layouts, on tiny files written with the real naming; the image
checks before any job (every bad file listed at once, exclude/skip, the cache); and the split."""

import json
import os
import re

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import ROOT, snakemake
from midiffusion import cohort as cohort_module
from midiffusion.cohort import PICK_RULE, checked_cohort, find_subjects, split_subjects
from midiffusion.io import InputError, save_volume
from midiffusion.layout import bids_image

CONTRASTS = ["T1w", "PDw", "T2w"]
HEAD = np.diag([16.0, 16.0, 16.0, 1.0])  # 8 voxels of 16 mm: a 128 mm field of view, over the minimum


def _touch(path):
    save_volume(path, np.ones((4, 4, 4)), np.eye(4))


def _head(path, data=None, affine=HEAD):
    save_volume(path, np.ones((8, 8, 8)) if data is None else data, affine)


def _zero_voxel_size(path):
    """An sform with a zero column (a degenerate affine that nibabel's constructor would refuse)."""
    header = nib.Nifti1Header()
    header.set_data_shape((8, 8, 8))
    header.set_data_dtype(np.float32)
    header.set_qform(HEAD, code=1)
    header.set_sform(np.diag([0.0, 16.0, 16.0, 1.0]), code=1)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), None, header), str(path))


def _bids_subject(root, subject, contrasts=CONTRASTS):
    for contrast in contrasts:
        _head(bids_image(root, subject, contrast))


@pytest.fixture
def bad_bids(tmp_path):
    """Subjects 01, 08, 09 are good; 02 to 07 each have one problem."""
    root = tmp_path / "bids"
    for subject in ["01", "02", "03", "04", "06", "07", "08", "09"]:
        _bids_subject(root, subject)
    _bids_subject(root, "05", ["T1w", "T2w"])  # no PDw
    bids_image(root, "02", "T1w").write_bytes(b"garbage bytes, not a NIfTI")
    nan = np.ones((8, 8, 8))
    nan[2, 3, 4] = np.nan
    _head(bids_image(root, "03", "T2w"), nan)
    _head(bids_image(root, "04", "PDw"), np.ones((8, 8, 8, 2)))
    _head(bids_image(root, "06", "T1w"), affine=np.eye(4))  # 8 mm across
    _zero_voxel_size(bids_image(root, "07", "T2w"))
    return root


def _check(root, tmp_path, exclude=(), bad_subjects="stop"):
    found = find_subjects("bids", root, CONTRASTS)
    return checked_cohort(found, CONTRASTS, list(exclude), bad_subjects, cache=tmp_path / "checks.json")


def _problem_lines(root):
    def image(subject, contrast):
        return re.escape(str(bids_image(root, subject, contrast)))

    return [
        rf"  subject 02: {image('02', 'T1w')}: not a readable NIfTI image \(.+\)",
        rf"  subject 03: {image('03', 'T2w')}: image contains 1 NaN or infinite voxels",
        rf"  subject 04: {image('04', 'PDw')}: expected a 3-D image, got shape \(8, 8, 8, 2\)",
        rf"  subject 05: {re.escape(str(root))}: no PDw image",
        rf"  subject 06: {image('06', 'T1w')}: field of view 8 x 8 x 8 mm is under 100 mm along an axis: "
        r"too small for a head",
        rf"  subject 07: {image('07', 'T2w')}: voxel size 16 x 16 x 16 mm in the header, 0 x 16 x 16 mm in the "
        r"affine: each must be > 0",
    ]


def test_every_bad_file_is_listed_at_once_with_its_reason(bad_bids, tmp_path):
    with pytest.raises(InputError) as error:
        _check(bad_bids, tmp_path)
    expected = "\n".join([
        rf"{re.escape(str(bad_bids))}: 6 subject\(s\) with a missing or bad image:",
        *_problem_lines(bad_bids),
        re.escape('Fix or remove these files, list the subjects in data.exclude (["02", "03", "04", "05", "06", '
                  '"07"]), or set data.bad_subjects: skip to leave them out with a warning.'),
    ])
    assert re.fullmatch(expected, str(error.value)), str(error.value)


def test_excluded_or_skipped_bad_subjects_let_the_rest_go_on(bad_bids, tmp_path):
    excluded = _check(bad_bids, tmp_path, exclude=["02", "03", "04", "05", "06", "07"])
    assert sorted(excluded.images) == ["01", "08", "09"] and excluded.notes == []
    skipped = _check(bad_bids, tmp_path, bad_subjects="skip")
    assert skipped.images == excluded.images
    [warning] = skipped.notes
    assert re.fullmatch("\n".join([
        rf"Warning: data.bad_subjects: skip leaves out {re.escape(str(bad_bids))}: 6 subject\(s\) with a missing or "
        r"bad image:",
        *_problem_lines(bad_bids),
    ]), warning), warning
    with pytest.raises(InputError, match=re.escape("data.exclude: ['99'] not found in")):
        _check(bad_bids, tmp_path, exclude=["01", "99"])
    with pytest.raises(InputError, match="no subject left"):
        _check(bad_bids, tmp_path, exclude=["01", "08", "09"], bad_subjects="skip")


def test_only_new_or_changed_files_are_opened_again(bad_bids, tmp_path, monkeypatch):
    opened = []
    load_volume = cohort_module.load_volume
    monkeypatch.setattr(cohort_module, "load_volume", lambda path: opened.append(path) or load_volume(path))
    cache = tmp_path / "checks.json"
    first = _check(bad_bids, tmp_path, bad_subjects="skip")
    assert len(opened) == 8 * 3 + 2 and cache.exists()  # 05 has two images
    opened.clear()
    assert _check(bad_bids, tmp_path, bad_subjects="skip") == first and opened == []
    fixed = bids_image(bad_bids, "03", "T2w")
    _head(fixed)
    os.utime(fixed, ns=(0, 10**18))  # a new mtime even where the clock is coarse
    again = _check(bad_bids, tmp_path, bad_subjects="skip")
    assert opened == [fixed] and "03" in again.images
    assert json.loads(cache.read_text())["images"][str(fixed.resolve())]["problem"] is None


def test_ixi_subjects_with_a_missing_contrast_are_listed(tmp_path):
    for name in ["IXI002-Guys-0828-T1", "IXI002-Guys-0828-T2", "IXI002-Guys-0828-PD",
                 "IXI012-HH-1211-T1", "IXI012-HH-1211-T2", "IXI012-HH-1211-PD",
                 "IXI013-HH-1212-T1", "IXI013-HH-1212-T2"]:  # IXI013 has no PD
        _head(tmp_path / f"{name}.nii.gz")
    (tmp_path / "IXI002-Guys-0828-MRA.nii.gz").write_text("ignored")
    found = find_subjects("ixi", tmp_path, CONTRASTS)
    assert sorted(found.images) == ["002", "012", "013"] and sorted(found.images["013"]) == ["T1w", "T2w"]
    assert found.images["012"]["PDw"].name == "IXI012-HH-1211-PD.nii.gz"
    with pytest.raises(InputError, match=re.escape(f"  subject 013: {tmp_path}: no PDw image")):
        checked_cohort(found, CONTRASTS, [], "stop", cache=tmp_path / "checks.json")
    assert sorted(checked_cohort(found, CONTRASTS, ["013"], "stop", cache=tmp_path / "checks.json").images) == [
        "002", "012"]


def test_bids_with_and_without_sessions(tmp_path):
    for subject, session in [("01", None), ("02", "ses-1"), ("02", "ses-2")]:
        anat = tmp_path / f"sub-{subject}" / (session or "") / "anat"
        for contrast in CONTRASTS:
            tag = f"_{session}" if session else ""
            _touch(anat / f"sub-{subject}{tag}_{contrast}.nii.gz")
    found = find_subjects("bids", tmp_path, CONTRASTS)
    assert sorted(found.images) == ["01", "02"]
    assert "ses-1" in str(found.images["02"]["T1w"])  # the first session
    assert found.images["01"]["T2w"] == bids_image(tmp_path, "01", "T2w")
    assert len(found.notes) == 3  # one per contrast of 02


def test_bids_entities_are_found_and_one_image_picked_reproducibly(tmp_path):
    names = {
        "01": ["ses-2/anat/sub-01_ses-2_T1w", "ses-1/anat/sub-01_ses-1_ce-gad_T1w",
               "ses-1/anat/sub-01_ses-1_run-2_T1w", "ses-1/anat/sub-01_ses-1_T1w",
               "ses-10/anat/sub-01_ses-10_acq-fast_rec-norm_run-1_T2w", "ses-2/anat/sub-01_ses-2_PDw"],
        "02": ["anat/sub-02_ce-gad_T1w", "anat/sub-02_acq-3d_T2w", "anat/sub-02_rec-mag_run-01_PDw"],
    }
    for subject, files in names.items():
        for name in files:
            _touch(tmp_path / f"sub-{subject}" / f"{name}.nii.gz")
    _touch(tmp_path / "sub-02/anat/sub-02_FLAIR.nii.gz")  # not a contrast of the pipeline
    (tmp_path / "sub-02/anat/sub-02_acq-3d_T2w.json").write_text("{}")
    found = find_subjects("bids", tmp_path, CONTRASTS)
    picked = {s: {c: path.name.removesuffix(".nii.gz") for c, path in images.items()}
              for s, images in found.images.items()}
    assert picked == {
        "01": {"T1w": "sub-01_ses-1_T1w", "PDw": "sub-01_ses-2_PDw",
               "T2w": "sub-01_ses-10_acq-fast_rec-norm_run-1_T2w"},
        "02": {"T1w": "sub-02_ce-gad_T1w", "PDw": "sub-02_rec-mag_run-01_PDw", "T2w": "sub-02_acq-3d_T2w"},
    }
    assert found.notes == [  # the one subject/contrast with several candidates
        "subject 01 T1w: using sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz, not sub-01_ses-1_run-2_T1w.nii.gz, "
        f"sub-01_ses-2_T1w.nii.gz, sub-01_ses-1_ce-gad_T1w.nii.gz ({PICK_RULE})"
    ]


def test_missing_folder_and_empty_cohort_are_clear(tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        find_subjects("bids", tmp_path / "nope", CONTRASTS)
    with pytest.raises(InputError, match="no image of"):
        find_subjects("ixi", tmp_path, CONTRASTS)


def test_dry_run_stops_on_a_bad_image_before_any_job(tmp_path):
    """A BIDS folder with one NaN image: `snakemake -n` fails naming it and writes nothing but the
    checks' cache; with the subject excluded the same dry run plans the rest."""
    root = tmp_path / "bids"
    for subject in ["01", "02", "03"]:
        _bids_subject(root, subject)
    bad = bids_image(root, "02", "PDw")
    _head(bad, np.full((8, 8, 8), np.nan))
    config = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    config["data"].update(layout="bids", root=str(root), sources=[c for c in CONTRASTS if c != "T1w"])
    configfile = tmp_path / "bids.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--dry-run", configfile=configfile, check=False)
    assert result.returncode != 0
    assert f"subject 02: {bad}: image contains 512 NaN or infinite voxels" in result.stdout + result.stderr
    written = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "results").rglob("*") if p.is_file())
    assert written == ["results/cohort/image_checks.json"]
    config["data"]["exclude"] = ["02"]
    configfile.write_text(yaml.safe_dump(config))
    planned = snakemake(tmp_path, "--dry-run", configfile=configfile).stdout
    assert "sub-01_T1w.nii.gz" in planned and "sub-02_" not in planned


def test_split_is_reproducible_and_disjoint():
    subjects = [f"{i:02d}" for i in range(1, 11)]
    split = split_subjects(subjects, 3, seed=4)
    assert split == split_subjects(list(reversed(subjects)), 3, seed=4)
    assert len(split.test) == 3 and not set(split.test) & set(split.train)
    assert sorted(split.train + split.test) == subjects
    assert split != split_subjects(subjects, 3, seed=5)
    with pytest.raises(InputError, match="split.n_test"):
        split_subjects(subjects, 10, seed=0)


def test_held_out_subjects_are_always_test_subjects():
    subjects = [f"{i:02d}" for i in range(1, 11)]
    split = split_subjects(subjects, 2, seed=0, held_out=["colin02", "colin01"])
    assert split.test[-2:] == ["colin01", "colin02"] and len(split.test) == 4
    assert split.test[:2] == split_subjects(subjects, 2, seed=0).test  # the same template subjects
    assert not {"colin01", "colin02"} & set(split.train)


def _validated(config):
    from snakemake.utils import validate

    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    return config


def test_run_cohort_of_a_bids_folder(tmp_path, monkeypatch):
    """The cohort the workflow resolves (and writes to results/cohort/split.json): the subjects data.subjects
    names, split by split.seed, no held-out anatomy; the image checks cached in the run's cohort folder."""
    root = tmp_path / "bids"
    for subject in ["01", "02", "03", "04", "05"]:
        _bids_subject(root, subject)
    config = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    config["data"].update(layout="bids", root=str(root), sources=["PDw", "T2w"], subjects=["01", "02", "03", "05"])
    monkeypatch.chdir(tmp_path)
    run = cohort_module.resolve_cohort(_validated(config))
    assert run.subjects == ["01", "02", "03", "05"] and sorted(run.images) == ["01", "02", "03", "04", "05"]
    assert run.split == split_subjects(run.subjects, config["split"]["n_test"], config["split"]["seed"])
    assert run.held_out == [] and run.anatomies == {} and run.held_out_anatomy is None
    assert json.loads(json.dumps(run.record())) == {"train": run.split.train, "test": run.split.test,
                                                     "held_out": [], "held_out_anatomy": None, "anatomies": {}}
    assert (tmp_path / "results" / "cohort" / "image_checks.json").exists()


def test_run_cohort_of_the_phantom_keeps_the_held_out_anatomy_for_testing():
    config = _validated(yaml.safe_load((ROOT / "config" / "ci.yaml").read_text()))
    run = cohort_module.resolve_cohort(config)
    assert run.held_out == ["colin01"] and run.held_out_anatomy == "colin27"
    assert run.subjects == ["01", "02", "03", "04", "colin01"] and "colin01" in run.split.test
    assert run.anatomies == {s: "colin27" if s == "colin01" else "icbm152_2009a" for s in run.split.test}


def test_read_split_names_the_missing_file(tmp_path):
    with pytest.raises(InputError, match="split.json: missing; the workflow writes it"):
        cohort_module.read_split(tmp_path / "results" / "cohort" / "split.json")
