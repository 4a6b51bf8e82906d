import subprocess
import sys
import tempfile

import ants
import numpy as np

from midiffusion.preprocess import atropos_labels


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
