import os
import subprocess
import sys
import tempfile

import ants
import numpy as np

from conftest import BIN
from midiffusion.io import load_volume, save_volume
from midiffusion.metrics import pearson_correlation
from midiffusion.preprocess import SubjectImages, atropos_labels, preprocess_subject
from midiffusion.template import reference_head


def test_atropos_labels_find_three_tissues_and_leave_no_temp_files(tmp_path, monkeypatch):
    # Three slabs of increasing T1w brightness (CSF < GM < WM) with a little noise, all inside the mask.
    rng = np.random.default_rng(0)
    data = np.repeat([0.2, 0.5, 0.9], 8)[:, None, None] * np.ones((24, 12, 12)) + rng.normal(0, 0.02, (24, 12, 12))
    truth = np.repeat([1, 2, 3], 8)[:, None, None] * np.ones((24, 12, 12), dtype=np.uint8)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    labels = atropos_labels(ants.from_numpy(data.astype(np.float32)), np.ones(data.shape, bool), "T1w")
    assert (labels == truth).mean() > 0.99
    assert list(tmp_path.iterdir()) == []  # ants.atropos' probability images went to a removed folder
    assert tempfile.tempdir == str(tmp_path)


def test_preprocess_does_not_import_the_phantom_simulator():
    # Brain extraction's reference head comes from the template module; real data needs no simulator.
    check = "import midiffusion.preprocess, sys; assert 'midiffusion.phantom' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


def test_preprocess_writes_the_registered_template_on_the_target_grid(tmp_path):
    # The one whole preprocessing run (SyN included), kept cheap: 8 mm heads of ~24 x 29 x 23 voxels.
    # The subject is the reference head itself, shifted by a voxel, with noise; the template that brain
    # extraction registers to it must come out on its grid and look like it.
    rng = np.random.default_rng(0)
    images = {}
    for contrast in ("T1w", "PDw"):
        head = reference_head(8.0, contrast)
        data = np.roll(head.image, 1, axis=0) + rng.normal(0, 0.02 * head.image.max(), head.image.shape)
        images[contrast] = save_volume(tmp_path / f"{contrast}_raw.nii.gz", data, head.affine)
    out = tmp_path / "out"
    preprocess_subject(SubjectImages("01", "T1w", images), out, use_n4=False)
    target, mask, template = (load_volume(out / f"{name}.nii.gz") for name in ("T1w", "brainmask", "template"))
    assert template.data.shape == target.data.shape == mask.data.shape
    np.testing.assert_allclose(template.affine, target.affine, atol=1e-5)
    inside = mask.data > 0
    assert pearson_correlation(template.data[inside], target.data[inside]) > 0.9


def test_preprocessing_twice_gives_the_same_images(tmp_path):
    # As the workflow runs it (one ITK thread, a process per subject): ANTs' random sampling is seeded, not
    # left to the clock, so a rerun reproduces the brain mask and the images (8 mm heads: cheap).
    images = [f"--image={contrast}={save_volume(tmp_path / f'{contrast}.nii.gz', head.image, head.affine)}"
              for contrast, head in ((c, reference_head(8.0, c)) for c in ("T1w", "PDw"))]
    env = os.environ | {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    for run in ("first", "again"):
        command = [str(BIN / "midiffusion"), "preprocess", "--subject", "01", "--target", "T1w", *images,
                   "--no-n4", "--out-dir", str(tmp_path / run)]
        subprocess.run(command, env=env, check=True, capture_output=True)
    for name in ("brainmask", "T1w_norm", "PDw_norm"):
        first, again = (load_volume(tmp_path / run / f"{name}.nii.gz").data for run in ("first", "again"))
        np.testing.assert_array_equal(again, first, err_msg=name)
