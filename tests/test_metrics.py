"""Dice, image metrics inside the mask, evaluate_case on tiny NIfTIs and the long table."""

import math

import numpy as np
import pytest

from midiffusion.io import InputError, save_volume
from midiffusion.metrics import (
    collect_metrics, dice_per_class, evaluate_case, image_metrics, intensity_bound_corr, intensity_bound_dice,
)

SHAPE = (12, 12, 10)


def _labels(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 4, size=SHAPE)


def _image(rng: np.random.Generator) -> np.ndarray:
    """A smooth-ish image in [-1, 1] with structure, so SSIM is meaningful."""
    x, y, z = np.meshgrid(*(np.linspace(0, np.pi, n) for n in SHAPE), indexing="ij")
    return np.clip(np.sin(2 * x) * np.cos(y) * 0.8 + 0.05 * rng.standard_normal(SHAPE), -1, 1)


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:10, 2:10, 2:8] = True
    return mask


def test_dice_perfect_and_disjoint():
    truth = _labels(np.random.default_rng(0))
    assert dice_per_class(truth, truth) == {"CSF": 1.0, "GM": 1.0, "WM": 1.0, "mean": 1.0}
    shifted = np.where(truth > 0, truth % 3 + 1, 0)  # every tissue voxel gets another tissue label
    assert dice_per_class(shifted, truth) == {"CSF": 0.0, "GM": 0.0, "WM": 0.0, "mean": 0.0}


def test_dice_partial_overlap_by_hand():
    truth = np.array([1, 1, 1, 1, 2, 2, 3, 0])
    pred = np.array([1, 1, 0, 0, 2, 3, 3, 3])
    # CSF: |P|=2, |T|=4, overlap 2 -> 4/6; GM: |P|=1, |T|=2, overlap 1 -> 2/3; WM: |P|=3, |T|=1, overlap 1 -> 2/4
    scores = dice_per_class(pred, truth)
    assert scores["CSF"] == pytest.approx(4 / 6)
    assert scores["GM"] == pytest.approx(2 / 3)
    assert scores["WM"] == pytest.approx(0.5)
    assert scores["mean"] == pytest.approx((4 / 6 + 2 / 3 + 0.5) / 3)


def test_dice_absent_class_conventions():
    truth = np.array([1, 1, 2, 2, 0])
    # WM absent from both: NaN and left out of the mean
    scores = dice_per_class(np.array([1, 1, 2, 0, 0]), truth)
    assert math.isnan(scores["WM"])
    assert scores["mean"] == pytest.approx((1.0 + 2 / 3) / 2)
    # WM predicted but absent from the truth: 0, and counted in the mean
    scores = dice_per_class(np.array([1, 1, 2, 3, 0]), truth)
    assert scores["WM"] == 0.0
    assert scores["mean"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert math.isnan(dice_per_class(np.zeros(3), np.zeros(3))["mean"])


def test_dice_shape_mismatch_raises():
    with pytest.raises(InputError, match="shape"):
        dice_per_class(np.zeros((2, 2)), np.zeros((2, 3)))


def test_identical_images_psnr_inf_ssim_one_mae_zero():
    image = _image(np.random.default_rng(1))
    scores = image_metrics(image, image.copy(), _mask())
    assert scores["psnr"] == math.inf
    assert scores["ssim"] == pytest.approx(1.0)
    assert scores["mae"] == 0.0


def test_psnr_and_mae_by_hand():
    reference = np.full(SHAPE, -1.0)
    image = reference.copy()
    mask = _mask()
    inside = np.flatnonzero(mask)
    image.flat[inside[: inside.size // 2]] += 0.2  # half the mask voxels off by 0.2
    scores = image_metrics(image, reference, mask)
    assert scores["mae"] == pytest.approx(0.1)
    assert scores["psnr"] == pytest.approx(10 * np.log10(4 / 0.02))  # MSE = 0.04 / 2


def test_ssim_lower_for_noisier_images():
    rng = np.random.default_rng(2)
    reference = _image(rng)
    little = image_metrics(reference + 0.05 * rng.standard_normal(SHAPE), reference, _mask())["ssim"]
    much = image_metrics(reference + 0.3 * rng.standard_normal(SHAPE), reference, _mask())["ssim"]
    assert much < little < 1.0


def test_voxels_outside_mask_change_nothing():
    rng = np.random.default_rng(3)
    reference = _image(rng)
    image = reference + 0.1 * rng.standard_normal(SHAPE)
    mask = _mask()
    altered = np.where(mask, image, rng.uniform(-1, 1, SHAPE))
    altered_reference = np.where(mask, reference, 0.7)
    before = image_metrics(image, reference, mask)
    after = image_metrics(altered, altered_reference, mask)
    assert after == pytest.approx(before)
    # ...while a change inside the mask is seen by every metric (not a mere offset: corr ignores those)
    inside = image_metrics(np.where(mask, image + 0.1 * rng.standard_normal(SHAPE), image), reference, mask)
    assert all(inside[key] != pytest.approx(before[key]) for key in before)


def test_correlation_by_hand_and_only_inside_the_mask():
    rng = np.random.default_rng(3)
    reference, mask = _image(rng), _mask()
    assert image_metrics(reference, reference, mask)["corr"] == pytest.approx(1.0)
    assert image_metrics(0.5 * reference - 0.2, reference, mask)["corr"] == pytest.approx(1.0)  # gain and offset
    assert image_metrics(-reference, reference, mask)["corr"] == pytest.approx(-1.0)
    noise = rng.standard_normal(SHAPE)
    outside_changed = np.where(mask, reference, noise)  # anything outside the mask: still perfect
    assert image_metrics(outside_changed, reference, mask)["corr"] == pytest.approx(1.0)
    # By hand on the mask voxels: r = cov / (sd sd) of two short vectors.
    image, reference = np.full(SHAPE, -1.0), np.full(SHAPE, -1.0)
    inside = np.argwhere(mask)[:4]
    for (x, y, z), a, b in zip(inside, [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 1.0, 2.0]):
        image[x, y, z], reference[x, y, z] = a, b
    small = np.zeros(SHAPE, bool)
    small[tuple(inside.T)] = True
    # image (0, 1, 2, 3), reference (0, 1, 1, 2): centred (-1.5, -.5, .5, 1.5), (-1, 0, 0, 1); cov sum 3
    expected = 3 / np.sqrt(5 * 2)
    full = np.zeros(SHAPE, bool)
    full[2:10, 2:10, 2:8] = True
    assert image_metrics(image, reference, small)["corr"] == pytest.approx(expected)
    assert math.isnan(image_metrics(np.zeros(SHAPE), reference, full)["corr"])  # constant: undefined


def test_image_metrics_bad_input():
    image = _image(np.random.default_rng(4))
    with pytest.raises(InputError, match="empty"):
        image_metrics(image, image, np.zeros(SHAPE))
    with pytest.raises(InputError, match="shape"):
        image_metrics(image, image[:-1], _mask())
    with pytest.raises(InputError, match="SSIM"):
        image_metrics(image[:, :, :5], image[:, :, :5], _mask()[:, :, :5])


def _write_case(tmp_path, affine=np.eye(4)):
    rng = np.random.default_rng(5)
    truth = _labels(rng)
    prediction = truth.copy()
    prediction[0] = 0  # a known disagreement
    reference = _image(rng)
    image = reference + 0.1
    arrays = {"seg": prediction, "labels": truth, "image": image, "reference": reference, "mask": _mask()}
    paths = {name: tmp_path / f"{name}.nii.gz" for name in arrays}
    for name, data in arrays.items():
        save_volume(paths[name], data, affine if name == "image" else np.eye(4))
    return paths, arrays


def test_evaluate_case_matches_array_metrics(tmp_path):
    paths, arrays = _write_case(tmp_path)
    result = evaluate_case(paths["seg"], paths["labels"], paths["image"], paths["reference"], paths["mask"])
    assert result["dice"] == pytest.approx(dice_per_class(arrays["seg"], arrays["labels"]))
    assert result["dice"]["mean"] < 1.0
    expected = image_metrics(arrays["image"].astype(np.float32), arrays["reference"].astype(np.float32), arrays["mask"])
    assert {key: result[key] for key in ("psnr", "ssim", "mae", "corr")} == pytest.approx(expected)
    assert result["corr"] == pytest.approx(1.0)  # image = reference + 0.1
    assert result["mae"] == pytest.approx(0.1, abs=1e-5)


def test_evaluate_case_rejects_other_grid(tmp_path):
    paths, _ = _write_case(tmp_path, affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="image.nii.gz"):
        evaluate_case(paths["seg"], paths["labels"], paths["image"], paths["reference"], paths["mask"])


def test_collect_metrics_long_format():
    rows = [
        {"subject": "s1", "source": "T2w", "method": "none",
         "dice": {"CSF": 0.5, "GM": 0.25, "WM": 0.75, "mean": 0.5}, "psnr": 20.0, "ssim": 0.8, "mae": 0.1},
        {"subject": "s2", "source": "PDw", "method": "midiffusion", "dice": {"CSF": 0.9}, "psnr": 25.0},
    ]
    table = collect_metrics(rows)
    assert list(table.columns) == ["subject", "source", "method", "metric", "class", "value"]
    assert len(table) == 7 + 2
    row = table[(table["subject"] == "s1") & (table["metric"] == "dice") & (table["class"] == "GM")]
    assert row["value"].tolist() == [0.25]
    psnr = table[(table["subject"] == "s2") & (table["metric"] == "psnr")]
    assert psnr[["source", "method", "class", "value"]].values.tolist() == [["PDw", "midiffusion", "", 25.0]]
    with pytest.raises(InputError, match="method"):
        collect_metrics([{"subject": "s1", "source": "T2w", "psnr": 1.0}])


def test_intensity_bound_corr_is_one_for_any_function_of_the_image_and_zero_for_noise():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, size=SHAPE)
    per_bin = np.cos(np.floor((image + 1) / 2 * 64))  # any function of the intensity bin, not monotone
    assert intensity_bound_corr(image, per_bin, _mask()) == pytest.approx(1.0)
    assert intensity_bound_corr(image, np.cos(3 * image), _mask()) > 0.99  # smooth: nearly constant per bin
    # two voxels of each intensity with opposite references: the best map follows only the small trend
    image2 = np.repeat(np.linspace(-0.9, 0.9, 30), 2)
    trend = 0.01 * np.repeat(np.arange(30), 2)
    reference = np.tile([1.0, -1.0], 30) + trend
    bound = intensity_bound_corr(image2, reference, np.ones(60), bins=30)
    assert bound == pytest.approx(trend.std() / reference.std(), rel=0.02) and bound < 0.1


def test_intensity_bound_separable_contrast_scores_one():
    labels = np.array([1, 1, 2, 2, 3, 3])
    image = np.array([-0.8, -0.8, 0.0, 0.0, 0.8, 0.8])
    bound = intensity_bound_dice(image, labels, np.ones(6))
    assert bound == {"CSF": 1.0, "GM": 1.0, "WM": 1.0, "mean": 1.0}


def test_intensity_bound_flat_contrast_picks_the_commonest_class():
    labels = np.array([1, 2, 2, 3, 3, 3])
    bound = intensity_bound_dice(np.zeros(6), labels, np.ones(6))
    assert bound["CSF"] == 0.0 and bound["GM"] == 0.0
    assert bound["WM"] == pytest.approx(2 * 3 / (6 + 3))


def test_intensity_bound_partial_overlap_by_hand():
    # One bin holds CSF, CSF, GM (-> CSF), the other GM (-> GM): prediction 1, 1, 1, 2.
    labels = np.array([1, 1, 2, 2])
    image = np.array([-0.9, -0.9, -0.9, 0.9])
    bound = intensity_bound_dice(image, labels, np.ones(4))
    assert bound["CSF"] == pytest.approx(2 * 2 / (3 + 2))
    assert bound["GM"] == pytest.approx(2 * 1 / (1 + 2))
    assert math.isnan(bound["WM"])
    assert bound["mean"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_intensity_bound_ignores_voxels_outside_the_mask():
    # Outside the mask, a WM voxel shares the CSF intensity: it would make that bin a tie.
    labels = np.array([1, 2, 3, 3])
    image = np.array([-0.5, 0.0, 0.5, -0.5])
    bound = intensity_bound_dice(image, labels, np.array([1, 1, 1, 0]))
    assert bound["mean"] == 1.0


def test_intensity_bound_shape_mismatch_raises():
    with pytest.raises(InputError, match="mask"):
        intensity_bound_dice(np.zeros(4), np.ones(4), np.ones(5))
