"""Baselines by hand on tiny volumes: invert, atlas_map (non-monotone maps, no anatomy leak),
grid_ceiling, and run_baseline's optional inputs."""

import subprocess
import sys

import numpy as np
import pytest

from midiffusion.baselines import (
    BaselineInputs, atlas_map, atlas_match, fit_intensity_map, grid_ceiling, histmatch, invert, run_baseline,
)
from midiffusion.intensity import normalise
from midiffusion.io import InputError, Volume, load_volume, save_volume
from midiffusion.layout import BACKGROUND
from midiffusion.metrics import pearson_correlation

SHAPE = (24, 24, 24)


def _ball(shape=SHAPE) -> np.ndarray:
    x, y, z = np.indices(shape)
    centre = (np.array(shape) - 1) / 2
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= (min(shape) / 2 - 1) ** 2


def _inputs(source, mask, target=None, references=(), **options) -> BaselineInputs:
    """Normalised-looking volumes: the given values in the brain, BACKGROUND outside."""
    affine = np.eye(4)
    source = np.where(mask, source, BACKGROUND).astype(np.float32)
    target = source if target is None else np.where(mask, target, BACKGROUND).astype(np.float32)
    refs = [(Volume(np.where(m, r, BACKGROUND).astype(np.float32), affine), m) for r, m in references]
    return BaselineInputs(Volume(source, affine), Volume(target, affine), mask, refs, **options)


def test_invert_by_hand_reverses_the_order_onto_the_reference_values():
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 1, :] = True
    source = np.zeros(mask.shape)
    source[1, 1, :] = [-0.8, -0.2, 0.4, 0.9]
    reference = np.zeros(mask.shape)
    reference[1, 1, :] = [0.3, -0.5, 0.7, 0.1]
    out = invert(_inputs(source, mask, references=[(reference, mask)]))
    np.testing.assert_allclose(out[1, 1, :], [0.7, 0.3, 0.1, -0.5])  # darkest source -> brightest target
    assert (out[~mask] == BACKGROUND).all()


def test_invert_is_decreasing_and_has_the_pooled_reference_histogram():
    rng = np.random.default_rng(0)
    mask = _ball()
    source = rng.uniform(-1, 1, SHAPE)
    # Two training targets with different brains, pooled: a bimodal reference.
    half = mask & (np.indices(SHAPE)[0] < 12)
    references = [(rng.normal(-0.4, 0.1, SHAPE), mask), (rng.normal(0.5, 0.2, SHAPE), half)]
    out = invert(_inputs(source, mask, references=references))[mask]
    order = np.argsort(source[mask])
    assert (np.diff(out[order]) <= 1e-6).all()  # non-increasing in the source
    pooled = np.concatenate([np.where(m, r, BACKGROUND)[m] for r, m in references])
    quantiles = np.linspace(0.01, 0.99, 25)
    np.testing.assert_allclose(np.quantile(out, quantiles), np.quantile(pooled, quantiles), atol=0.02)


def test_invert_and_histmatch_need_references():
    mask = _ball()
    with pytest.raises(InputError, match="--reference"):
        invert(_inputs(np.zeros(SHAPE), mask))


@pytest.mark.parametrize("shape", [
    lambda s: 2 * np.abs(s) - 1,  # a V: dark in the middle, bright at both ends
    lambda s: np.sin(3 * s),  # up, down, up
])
def test_atlas_map_recovers_a_non_monotone_map(shape):
    rng = np.random.default_rng(1)
    mask = _ball()
    source = rng.uniform(-1, 1, SHAPE)
    # The template in its own units (gain, offset) and with a bright skull outside the brain, which
    # must not matter: atlas_map normalises it in the brain as preprocessing normalises the target.
    template = np.where(mask, 300 + 200 * shape(source), 900.0)
    expected = normalise(template, mask)[mask]
    out = atlas_map(_inputs(source, mask, template=Volume(template.astype(np.float32), np.eye(4))))
    assert np.abs(out[mask] - expected).max() < 0.03
    assert (out[~mask] == BACKGROUND).all()


def test_atlas_map_does_not_copy_the_template_anatomy():
    # Template and source independent: the template has structure (a gradient along x), the source
    # is noise. The conditional mean of the template given the source is its overall mean, so the
    # output is nearly constant and does not correlate with the template.
    rng = np.random.default_rng(2)
    mask = _ball()
    source = rng.uniform(-1, 1, SHAPE)
    template = np.indices(SHAPE)[0].astype(np.float32)
    out = atlas_map(_inputs(source, mask, template=Volume(template, np.eye(4))))[mask]
    normalised = normalise(template, mask)[mask]
    assert out.std() < 0.15 * normalised.std()
    assert abs(pearson_correlation(out, normalised)) < 0.1


def _tissue_toy(rng: np.random.Generator, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A three-tissue target-contrast 'anatomy' in the brain (dark, mid, bright in equal thirds, with a
    little noise) and a second draw of it as the training reference."""
    tissue = rng.integers(0, 3, SHAPE)
    return [np.array([-0.6, 0.1, 0.7])[tissue] + rng.normal(0, 0.03, SHAPE) for _ in range(2)]


@pytest.mark.parametrize("direction, expected", [(-1.0, invert), (1.0, histmatch)])
def test_atlas_match_finds_the_direction_without_labels(direction, expected):
    # The same start, not told the direction: for an inverted toy it is the negated map (invert), for a
    # plain one the identity's (histmatch). Only the template (the toy's target contrast, in its own
    # units) pairs with the source; no label and no real target is read.
    rng = np.random.default_rng(4)
    mask = _ball()
    target, reference = _tissue_toy(rng, mask)
    source = direction * target + rng.normal(0, 0.02, SHAPE)
    template = Volume((500 + 300 * target).astype(np.float32), np.eye(4))
    inputs = _inputs(source, mask, references=[(reference, mask)], template=template)
    out = atlas_match(inputs)[mask]
    assert pearson_correlation(out, target[mask]) > 0.99
    assert np.abs(out - expected(inputs)[mask]).mean() < 0.01


def test_atlas_match_orders_a_non_monotone_source_as_the_target():
    # FLAIR-like: the target's middle tissue brightest in the source, its dark tissue darkest. Neither
    # invert nor histmatch can order the three tissues; atlas_match recovers the target's order.
    rng = np.random.default_rng(5)
    mask = _ball()
    target, reference = _tissue_toy(rng, mask)
    source = np.select([target < -0.3, target < 0.4], [-0.8, 0.6], 0.2) + rng.normal(0, 0.02, SHAPE)
    template = Volume((500 + 300 * target).astype(np.float32), np.eye(4))
    inputs = _inputs(source, mask, references=[(reference, mask)], template=template)
    assert pearson_correlation(atlas_match(inputs)[mask], target[mask]) > 0.99
    for monotone in (invert, histmatch):
        assert pearson_correlation(monotone(inputs)[mask], target[mask]) < 0.8


def test_intensity_map_interpolates_across_empty_bins():
    rng = np.random.default_rng(3)
    source = np.concatenate([rng.uniform(-0.7, -0.5, 500), rng.uniform(0.5, 0.7, 500)])
    mapping = fit_intensity_map(source, 0.5 * source + 0.1)  # linear: recovered everywhere in [-1, 1]
    queries = np.array([-1.0, -0.6, -0.3, 0.0, 0.3, 0.6, 1.0])  # in the clusters, between, beyond them
    np.testing.assert_allclose(mapping(queries), 0.5 * queries + 0.1, atol=1e-6)
    steep = fit_intensity_map(source, np.clip(4 * source, -1, 1))  # extended to the ends, within [-1, 1]
    assert steep(np.array([-1.0, 1.0])).tolist() == [-1.0, 1.0]


def test_atlas_map_needs_the_template():
    with pytest.raises(InputError, match="--template.*brain_extraction"):
        atlas_map(_inputs(np.zeros(SHAPE), _ball()))


def test_grid_ceiling_of_a_smooth_image_is_close_to_it():
    mask = np.zeros((20, 20, 8), bool)
    mask[3:17, 4:16, 1:7] = True
    interior = np.zeros_like(mask)
    interior[5:15, 6:14, 1:7] = True  # two voxels in from the mask's in-plane border
    x, y, _ = np.indices(mask.shape)
    image = 0.6 * np.sin(x / 5.0) * np.cos(y / 6.0)
    affine = np.eye(4)
    for size in (16, 32):  # down- and upsampling the 18-voxel crop
        # Smooth everywhere: close everywhere in the mask.
        smooth = Volume(image.astype(np.float32), affine)
        out = grid_ceiling(BaselineInputs(smooth, smooth, mask, [], slice_size=size))
        assert np.abs(out[mask] - image[mask]).max() < 0.05
        assert (out[~mask] == BACKGROUND).all()
        # A normalised target (BACKGROUND outside the mask): the brain's edge blurs, its interior does not.
        out = grid_ceiling(_inputs(image, mask, slice_size=size))
        assert np.abs(out[interior] - image[interior]).max() < 0.05
        assert np.abs(out[mask] - image[mask]).max() > 0.1
    with pytest.raises(InputError, match="--slice-size"):
        grid_ceiling(_inputs(image, mask))


def _write_case(tmp_path, source, target, mask, template=None):
    paths = {}
    for name, data in (("source", source), ("target", target), ("mask", mask), ("template", template)):
        if data is not None:
            paths[name] = save_volume(tmp_path / f"{name}.nii.gz", data, np.eye(4))
    return paths


def test_run_baseline_keeps_the_old_call_and_passes_the_new_options(tmp_path):
    rng = np.random.default_rng(4)
    mask = _ball()
    source = np.where(mask, rng.uniform(-1, 1, SHAPE), BACKGROUND)
    template = np.where(mask, np.cos(3 * source), 0.0)
    paths = _write_case(tmp_path, source, source, mask.astype(np.uint8), template)
    common = (paths["source"], paths["target"], paths["mask"], [paths["target"]], [paths["mask"]])
    out = run_baseline("invert", *common, tmp_path / "invert.nii.gz")  # the positional call as before
    assert load_volume(out).data[mask].argmax() == source[mask].argmin()
    with pytest.raises(InputError, match="--template"):
        run_baseline("atlas_map", *common, tmp_path / "atlas.nii.gz")
    with pytest.raises(InputError, match="--slice-size"):
        run_baseline("grid_ceiling", *common, tmp_path / "grid.nii.gz")
    out = run_baseline("atlas_map", *common, tmp_path / "atlas.nii.gz", template=paths["template"],
                       percentiles=(0.0, 100.0))
    expected = normalise(template, mask, (0.0, 100.0))[mask]
    assert np.abs(load_volume(out).data[mask] - expected).max() < 0.03
    out = run_baseline("grid_ceiling", *common, tmp_path / "grid.nii.gz", slice_size=16)
    assert load_volume(out).data.shape == SHAPE
    with pytest.raises(InputError, match="unknown"):
        run_baseline("nope", *common, tmp_path / "nope.nii.gz")


def test_run_baseline_rejects_a_template_on_another_grid(tmp_path):
    mask = _ball()
    paths = _write_case(tmp_path, np.zeros(SHAPE), np.zeros(SHAPE), mask.astype(np.uint8))
    other = save_volume(tmp_path / "template.nii.gz", np.zeros((24, 24, 23)), np.eye(4))
    with pytest.raises(InputError, match="template.nii.gz"):
        run_baseline("atlas_map", paths["source"], paths["target"], paths["mask"], [], [],
                     tmp_path / "atlas.nii.gz", template=other)


def test_the_intensity_maps_load_without_ants_or_torch():
    """A baseline job per case: importing ANTsPy (3 s) or torch for each would cost more than the map."""
    code = "import sys, midiffusion.baselines; print(sorted({'ants', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
