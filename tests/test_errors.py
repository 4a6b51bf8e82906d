"""Bad input: a clear message naming the file and the problem, exit code 2, no half-written output."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from midiffusion.io import InputError, atomic_path, load_volume, save_volume


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midiffusion.cli", *args], capture_output=True, text=True)


def _preprocess(tmp_path, images: dict[str, str], labels=None):
    args = ["preprocess", "--subject", "01", "--target", "T1w", "--out-dir", str(tmp_path / "out")]
    args += [f"--image={c}={p}" for c, p in images.items()]
    if labels:
        args += ["--labels", str(labels), "--brain-extraction", "labels"]
    return _cli(*args)


@pytest.fixture
def good(tmp_path):
    image = np.random.default_rng(0).random((12, 12, 10)).astype(np.float32) + 1
    save_volume(tmp_path / "t1.nii.gz", image, np.eye(4))
    save_volume(tmp_path / "pd.nii.gz", image, np.eye(4))
    return tmp_path


def test_missing_file_is_named(good):
    result = _preprocess(good, {"T1w": good / "t1.nii.gz", "PDw": good / "nope.nii.gz"})
    assert result.returncode == 2
    assert "nope.nii.gz: file not found" in result.stderr and "Traceback" not in result.stderr
    assert not (good / "out" / "T1w.nii.gz").exists()


def test_corrupt_file_is_named(good):
    (good / "bad.nii.gz").write_bytes(gzip.compress(b"not a nifti at all"))
    result = _preprocess(good, {"T1w": good / "bad.nii.gz", "PDw": good / "pd.nii.gz"})
    assert result.returncode == 2 and "bad.nii.gz: not a readable NIfTI" in result.stderr


def test_nan_is_named(good):
    data = np.ones((12, 12, 10), np.float32)
    data[3, 3, 3] = np.nan
    save_volume(good / "nan.nii.gz", data, np.eye(4))
    result = _preprocess(good, {"T1w": good / "t1.nii.gz", "PDw": good / "nan.nii.gz"})
    assert result.returncode == 2 and "nan.nii.gz: image contains 1 NaN" in result.stderr


def test_mismatched_label_shape_is_named(good):
    save_volume(good / "labels.nii.gz", np.ones((12, 12, 9)), np.eye(4), dtype=np.uint8)
    result = _preprocess(good, {"T1w": good / "t1.nii.gz", "PDw": good / "pd.nii.gz"}, labels=good / "labels.nii.gz")
    assert result.returncode == 2 and "labels.nii.gz: shape (12, 12, 9) does not match" in result.stderr


def test_empty_brain_mask_is_named(good):
    save_volume(good / "labels.nii.gz", np.zeros((12, 12, 10)), np.eye(4), dtype=np.uint8)
    result = _preprocess(good, {"T1w": good / "t1.nii.gz", "PDw": good / "pd.nii.gz"}, labels=good / "labels.nii.gz")
    assert result.returncode == 2 and "brain mask is empty" in result.stderr
    assert not list((good / "out").glob("*.nii.gz"))


def test_four_d_image_is_rejected(tmp_path):
    save_volume(tmp_path / "4d.nii.gz", np.ones((4, 4, 4, 3)), np.eye(4))
    with pytest.raises(InputError, match="4d.nii.gz: expected a 3-D image"):
        load_volume(tmp_path / "4d.nii.gz")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.nii.gz") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
