"""The embedded phantom cohort: physics, files, determinism and the known misalignment (4 mm to stay fast)."""

import numpy as np
import pytest

from midiffusion import head, phantom
from midiffusion.io import InputError, load_volume, read_json

VOXEL_MM = 4.0
SOURCES = ["PDw", "T2w", "FLAIR"]
CONTRASTS = ["T1w", *SOURCES]


def simulate(subject="01", seed=0, **switches):
    return phantom.simulate_subject(subject, voxel_mm=VOXEL_MM, seed=seed, **switches)


@pytest.fixture(scope="module")
def clean():
    """Noise-, bias- and misalignment-free subject: images are the pure tissue physics."""
    return simulate(noise=False, bias=False, misalign=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    written = phantom.build_cohort(root / "bids", ["01", "02"], voxel_mm=VOXEL_MM, seed=3, qc_dir=root / "qc")
    return root, written


def tissue_means(subject: phantom.SubjectPhantom, contrast: str, threshold: float, names) -> dict[str, float]:
    """Mean intensity over the voxels where each tissue's fraction is above the threshold."""
    image = subject.images[contrast]
    means = {}
    for name in names:
        pure = subject.anatomy.fractions[name] > threshold
        assert pure.sum() >= 10, f"too few voxels of pure {name}"
        means[name] = float(image[pure].mean())
    return means


def centroid_mm(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    index = np.indices(image.shape).reshape(3, -1)
    voxel = (index * image.reshape(-1)).sum(axis=1) / image.sum()
    return affine[:3, :3] @ voxel + affine[:3, 3]


def test_spin_echo_orders_tissues_at_nominal_parameters():
    signal = {
        contrast: {name: tissue.signal(protocol) for name, tissue in head.BRAIN_TISSUES.items()}
        for contrast, protocol in head.PROTOCOLS.items()
    }
    assert signal["T1w"]["WM"] > signal["T1w"]["GM"] > signal["T1w"]["CSF"]
    assert signal["T2w"]["CSF"] > signal["T2w"]["GM"] > signal["T2w"]["WM"]
    assert signal["PDw"]["CSF"] > signal["PDw"]["GM"] > signal["PDw"]["WM"]
    assert signal["FLAIR"]["GM"] > signal["FLAIR"]["WM"] > signal["FLAIR"]["CSF"]


def test_inversion_recovery_signal_against_hand_values():
    protocol = head.Protocol(tr_ms=9000.0, te_ms=120.0, inversions_ms=(1700.0,))
    # GM: 0.86 |1 - 2 exp(-1700/833) + exp(-9000/833)| exp(-120/83), by hand 0.86 * 0.74010 * 0.23556
    assert head.Tissue(833.0, 83.0, 0.86).signal(protocol) == pytest.approx(0.149936, rel=1e-4)
    # A tissue still inverted at TI (T1 4000 ms): 1 - 2 * 0.65377 + 0.10540 = -0.20214, its magnitude
    # times exp(-120/300) = 0.67032
    assert head.Tissue(4000.0, 300.0, 1.0).signal(protocol) == pytest.approx(0.135498, rel=1e-4)
    # Without an inversion the same tissue follows the spin echo
    spin_echo = head.Protocol(tr_ms=9000.0, te_ms=120.0)
    assert head.Tissue(833.0, 83.0, 0.86).signal(spin_echo) == pytest.approx(0.86 * (1 - np.exp(-9000 / 833)) * np.exp(-120 / 83))


def test_flair_nulls_csf_at_its_inversion_time():
    flair = head.PROTOCOLS["FLAIR"]
    (ti,) = flair.inversions_ms
    assert ti == pytest.approx(2569.0 * np.log(2 / (1 + np.exp(-9000 / 2569))), rel=1e-9)
    assert 1650 < ti < 1750  # about 1,700 ms for 1.5 T CSF at TR 9000 ms
    assert head.BRAIN_TISSUES["CSF"].signal(flair) == pytest.approx(0.0, abs=1e-12)
    assert head.tissues_by_brightness("FLAIR") == (1, 3, 2)  # CSF < WM < GM
    assert head.tissues_by_brightness("T1w") == (1, 2, 3)


def test_double_inversion_recovery_signal_against_hand_values():
    protocol = head.Protocol(tr_ms=9000.0, te_ms=25.0, inversions_ms=(400.0, 3000.0))  # any order
    # GM: Mz = 1 - 2 exp(-400/833) + 2 exp(-3000/833) - exp(-9000/833) = 1 - 1.23740 + 0.05463 - 0.00002
    # = -0.18279; its magnitude times 0.86 exp(-25/83) = 0.86 * 0.73998
    assert head.Tissue(833.0, 83.0, 0.86).signal(protocol) == pytest.approx(0.116310, rel=1e-4)
    # the same recursion gives inversion recovery's closed form with one pulse
    one = head.longitudinal_magnetisation(833.0, 9000.0, (1700.0,))
    assert one == pytest.approx(1 - 2 * np.exp(-1700 / 833) + np.exp(-9000 / 833), rel=1e-12)


def test_dir_nulls_csf_and_wm_and_leaves_gm_bright():
    dir_ = head.PROTOCOLS["DIR"]
    ti1, ti2 = dir_.inversions_ms
    assert ti1 > ti2 > 0
    signal = {name: tissue.signal(dir_) for name, tissue in head.BRAIN_TISSUES.items()}
    assert signal["CSF"] == pytest.approx(0.0, abs=1e-9) and signal["WM"] == pytest.approx(0.0, abs=1e-9)
    assert signal["GM"] > 0.1  # of PD units: GM alone is bright, between T1w's CSF and WM


@pytest.mark.parametrize("seed", [0, 1])
def test_contrast_orderings_before_noise_and_bias(seed):
    subject = simulate(seed=seed, noise=False, bias=False, misalign=False)
    t1w, pdw, t2w, flair = (tissue_means(subject, c, 0.9, head.TISSUES) for c in CONTRASTS)
    assert t1w["WM"] > t1w["GM"] > t1w["CSF"]
    assert t2w["CSF"] > t2w["GM"] > t2w["WM"]
    assert pdw["CSF"] > pdw["GM"] > pdw["WM"]
    assert flair["GM"] > flair["WM"] > flair["CSF"]  # no monotone map of T1w gives this order
    assert flair["CSF"] < 0.3 * flair["WM"]  # nulled, up to partial volume (>= 0.9 CSF), its own T1 and texture
    dir_ = tissue_means(simulate(seed=seed, sources=["DIR"], noise=False, bias=False, misalign=False), "DIR", 0.9,
                        head.TISSUES)
    assert dir_["GM"] > 3 * max(dir_["CSF"], dir_["WM"])  # both nulled, up to partial volume, T1 and texture


def test_head_fat_bright_in_t1w_and_skull_dark_everywhere(clean):
    means = {contrast: tissue_means(clean, contrast, 0.6, ("GM", "WM", "fat", "bone")) for contrast in CONTRASTS}
    assert means["T1w"]["fat"] > means["T1w"]["WM"]
    for contrast in CONTRASTS:
        assert means[contrast]["bone"] < min(means[contrast][name] for name in ("GM", "WM", "fat"))


def test_tissues_are_textured_not_flat(clean):
    pure_wm = clean.anatomy.fractions["WM"] > 0.99
    values = clean.images["T1w"][pure_wm]
    assert 0.005 < values.std() / values.mean() < 0.2


def test_partial_volumes_partition_and_labels(clean):
    anatomy = clean.anatomy
    total = sum(anatomy.fractions.values())
    assert min(f.min() for f in anatomy.fractions.values()) >= 0.0
    assert total.max() <= 1.0 + 1e-5
    brain = anatomy.fractions["CSF"] + anatomy.fractions["GM"] + anatomy.fractions["WM"]
    np.testing.assert_allclose(brain, anatomy.brain, atol=1e-5)
    labels = anatomy.labels
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert np.all(labels[anatomy.brain < 0.5] == 0)


def test_without_head_outside_of_brain_is_empty():
    subject = simulate(with_head=False, noise=False, bias=False, misalign=False)
    assert set(subject.anatomy.fractions) == set(head.TISSUES)
    assert subject.images["T1w"][subject.anatomy.brain == 0].max() == 0.0


def test_rician_noise_level_in_air():
    subject = simulate(misalign=False)
    air = sum(subject.anatomy.fractions.values()) == 0
    protocol = head.PROTOCOLS["T1w"]
    brightest = max(subject.tissues[name].signal(protocol) for name in head.TISSUES)
    sigma = phantom.PhantomSettings().noise * brightest * phantom.PhantomSettings().intensity_scale
    # The magnitude of pure complex Gaussian noise is Rayleigh distributed, mean sigma sqrt(pi / 2).
    assert subject.images["T1w"][air].mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.05)


def test_files_share_grid_and_are_valid(cohort):
    root, written = cohort
    for subject in ("01", "02"):
        paths = phantom.subject_paths(root / "bids", subject, CONTRASTS)
        assert set(paths.values()) <= set(written)
        volumes = [load_volume(paths[c]) for c in CONTRASTS]
        labels = load_volume(paths["dseg"])
        for volume in [*volumes, labels]:
            assert volume.data.shape == volumes[0].data.shape
            np.testing.assert_allclose(volume.affine, volumes[0].affine)
        np.testing.assert_allclose(volumes[0].voxel_mm, VOXEL_MM)
        assert np.all(np.diag(volumes[0].affine)[:3] > 0)  # RAS
        for volume in volumes:
            assert np.isfinite(volume.data).all() and volume.data.min() >= 0 and volume.data.max() > 0
        assert set(np.unique(labels.data).astype(int)) == {0, 1, 2, 3}


def test_misalignment_json_is_a_small_rigid_transform(cohort):
    root, _ = cohort
    truth = read_json(phantom.subject_paths(root / "bids", "01", CONTRASTS)["misalignment"])
    assert set(truth) == set(SOURCES)
    for entry in truth.values():
        matrix = np.asarray(entry["target_to_source"])
        rotation = matrix[:3, :3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
        assert np.linalg.det(rotation) == pytest.approx(1.0)
        np.testing.assert_allclose(matrix[3], [0, 0, 0, 1])
        np.testing.assert_allclose(matrix[:3, 3], entry["translation_mm"])
        angle = np.degrees(np.arccos((np.trace(rotation) - 1) / 2))
        assert 0.5 < angle < 10 and 1 < np.linalg.norm(entry["translation_mm"]) < 10


def test_source_content_is_moved_by_the_recorded_transform():
    fixed = simulate(with_head=False, noise=False, bias=False, misalign=False)
    moved = simulate(with_head=False, noise=False, bias=False)
    for contrast in SOURCES:
        matrix = moved.misalignment[contrast].matrix
        before = centroid_mm(fixed.images[contrast], fixed.affine)
        after = centroid_mm(moved.images[contrast], moved.affine)
        expected = matrix[:3, :3] @ before + matrix[:3, 3]
        assert np.linalg.norm(after - before) > 1.5
        assert np.linalg.norm(after - expected) < 1.0
    np.testing.assert_array_equal(moved.images["T1w"], fixed.images["T1w"])  # the target is never moved


def test_subject_rebuilt_alone_is_identical(cohort, tmp_path):
    root, _ = cohort
    phantom.build_subject(tmp_path, "02", voxel_mm=VOXEL_MM, seed=3)
    for key in [*CONTRASTS, "dseg"]:
        alone = load_volume(phantom.subject_paths(tmp_path, "02", CONTRASTS)[key]).data
        in_cohort = load_volume(phantom.subject_paths(root / "bids", "02", CONTRASTS)[key]).data
        np.testing.assert_array_equal(alone, in_cohort)


def test_subject_and_seed_change_the_anatomy(clean):
    labels = clean.anatomy.labels
    for other in (simulate(subject="02", noise=False), simulate(seed=1, noise=False)):
        assert (other.anatomy.labels != labels).mean() > 0.005


def test_qc_figure_written(cohort):
    root, written = cohort
    for subject in ("01", "02"):
        figure = root / "qc" / f"sub-{subject}.png"
        assert figure in written
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "arguments",
    [
        {"subject": "0-1"},
        {"voxel_mm": 2.5},
        {"target": "FLAIR"},
        {"sources": ["T1w", "PDw"]},
        {"sources": ["PDw", "PDw"]},
    ],
)
def test_bad_arguments_raise_input_error(arguments, tmp_path):
    arguments = {"subject": "01", **arguments}
    with pytest.raises(InputError):
        phantom.build_subject(tmp_path, voxel_mm=arguments.pop("voxel_mm", VOXEL_MM), **arguments)
    assert not any(tmp_path.iterdir())
