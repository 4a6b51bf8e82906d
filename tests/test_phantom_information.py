"""tools/studies/phantom_information.py: the ceiling of a translation's correlation, on a hand-made run folder
whose reference T1w is the phantom's own."""

import numpy as np
import pytest

from conftest import load_script
from midiffusion.io import save_volume
from midiffusion.phantom import simulate_subject

SCRIPT = "tools/studies/phantom_information.py"


@pytest.fixture(scope="module")
def phantom():
    return simulate_subject("08", voxel_mm=4, misalign=False, bias=False, noise=False)


def _run(tmp_path, phantom, reference):
    folder = tmp_path / "results/preprocessed/sub-08"
    save_volume(folder / "T1w_norm.nii.gz", reference, phantom.affine)
    save_volume(folder / "brainmask.nii.gz", (phantom.anatomy.brain >= 0.5).astype(np.uint8), phantom.affine)
    return tmp_path


def test_a_noise_and_bias_free_reference_is_reached_by_the_perfect_translation_only(tmp_path, phantom):
    row = load_script(SCRIPT).subject_row(_run(tmp_path, phantom, phantom.images["T1w"]), "08")
    assert row["perfect_translation"] == pytest.approx(1.0)
    assert row["anatomy_and_tissues"] < 0.999  # without the texture
    assert 0 < row["clean_T2w_map"] < 1


def test_a_reference_with_its_own_noise_caps_the_perfect_translation(tmp_path, phantom):
    rng = np.random.default_rng(0)
    brain = phantom.anatomy.brain >= 0.5
    noisy = phantom.images["T1w"] + rng.normal(0, phantom.images["T1w"][brain].std(), phantom.images["T1w"].shape)
    row = load_script(SCRIPT).subject_row(_run(tmp_path, phantom, noisy), "08")
    assert row["perfect_translation"] == pytest.approx(np.sqrt(0.5), abs=0.03)  # signal and noise of equal variance
