"""One scan, no workflow (midiffusion.scan; docs/scan.md): translate-scan on a tiny model and an 8 mm head
on an oblique, anisotropic grid, the input checks, and segment-scan's model checks."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.transform import Rotation

import midiffusion.scan as scan
from midiffusion.cli import main
from midiffusion.config import DiffusionConfig
from midiffusion.io import Volume, load_volume, save_volume
from midiffusion.layout import BACKGROUND
from midiffusion.metrics import dice_per_class
from midiffusion.baselines import BaselineInputs, invert
from midiffusion.intensity import reference_quantiles
from midiffusion.diffusion.model import LoadedModel, build_model, save_model
from midiffusion.template import reference_head

from conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

VOXEL_MM = 8.0  # the working grid: brain extraction's registration takes seconds at 8 mm
SAMPLING = ["--steps", "2", "--start", "invert", "--start-t0", "0.5", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scan")


@pytest.fixture(scope="module")
def model(folder) -> Path:
    config = DiffusionConfig(image_size=16, base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,),
                             num_res_blocks=1, timesteps=10)
    targets = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    save_model(build_model(config), config, folder / "model.pt", reference_quantiles([targets.numpy()]))
    return folder / "model.pt"


@pytest.fixture(scope="module")
def source(folder) -> Volume:
    """The T2w reference head on a grid tilted by 10 degrees, with 7 x 7.5 x 9 mm voxels."""
    head = reference_head(VOXEL_MM, "T2w")
    linear = Rotation.from_euler("xz", [10, 10], degrees=True).as_matrix() @ np.diag([7.0, 7.5, 9.0])
    shape = np.array([28, 32, 22])
    centre = head.affine[:3, :3] @ (np.array(head.image.shape) - 1) / 2 + head.affine[:3, 3]
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, centre - linear @ (shape - 1) / 2
    data = scan.resample(Volume(head.image, head.affine), Volume(np.zeros(shape, np.float32), affine))
    path = save_volume(folder / "sub-01_T2w.nii.gz", data, affine)
    return load_volume(path)


@pytest.fixture(scope="module")
def translated(folder, model, source) -> dict[str, Volume]:
    """translate-scan end to end through the CLI, two samples, with the sd map."""
    out, std = folder / "out" / "T1w_like.nii.gz", folder / "out" / "T1w_like_std.nii.gz"
    args = ["--model", str(model), "--source", str(source.path), "--out", str(out), "--std", str(std)]
    assert main(["translate-scan", *args, "--voxel-mm", str(VOXEL_MM), "--no-n4", "--n-samples", "2", *SAMPLING]) == 0
    return {"image": load_volume(out), "std": load_volume(std)}


def test_translation_lies_on_the_input_grid(translated, source):
    for volume in translated.values():
        assert volume.data.shape == source.data.shape
        np.testing.assert_allclose(volume.affine, source.affine, atol=1e-5)
        assert np.isfinite(volume.data).all()


def test_translation_is_normalised_with_background_outside_the_brain(translated, source):
    image, std = translated["image"].data, translated["std"].data
    brain = image != BACKGROUND
    assert image.min() >= -1 and image.max() <= 1
    head = reference_head(VOXEL_MM, "T2w")  # the scan's own brain, on the scan's grid
    truth = scan.resample(Volume(head.brain.astype(np.float32), head.affine), source) > 0.5
    assert dice_per_class(brain, truth, {1: "brain"})["brain"] > 0.9
    assert (std[~brain] == 0).all() and std[brain].max() > 0


def _error(capsys, *args: str) -> str:
    """Run the CLI expecting a clean input error (exit code 2, no traceback); return its message."""
    assert main(list(args)) == 2
    message = capsys.readouterr().err
    assert "Traceback" not in message
    return message


@pytest.fixture
def no_compute(monkeypatch):
    """Any preprocessing fails the test: the input checks must come first."""
    monkeypatch.setattr(scan, "correct_and_extract", lambda *a, **k: pytest.fail("preprocessing ran before the checks"))


@pytest.mark.parametrize("problem, expected", [
    ("nan", "image contains 1 NaN"),
    ("missing model", "nope.pt: file not found"),
    ("not a model", "not a midiffusion model file"),
    ("image as model", "not a midiffusion model file"),
    ("std of one sample", "--std: a standard deviation needs n_samples > 1"),
    ("unnamed contrast", "name the source contrast with --contrast"),
    ("atlas start without a template", "the head model has no T2starw template"),
    ("model without target intensities", "predates the stored target intensities"),
])
def test_bad_input_is_named_before_any_compute_and_writes_nothing(
    tmp_path, capsys, no_compute, model, source, problem, expected
):
    image = source.path
    if problem == "nan":
        data = source.data.copy()
        data[3, 4, 5] = np.nan
        image = save_volume(tmp_path / "nan_T2w.nii.gz", data, source.affine)
    if problem == "unnamed contrast":
        image = save_volume(tmp_path / "scan.nii.gz", source.data, source.affine)
    if problem == "not a model":
        torch.save({"weights": {}}, tmp_path / "other.pt")
    if problem == "model without target intensities":
        loaded = torch.load(model, weights_only=True)
        torch.save({"model": loaded["model"], "config": loaded["config"]}, tmp_path / "old.pt")
    model_path = {"missing model": tmp_path / "nope.pt", "not a model": tmp_path / "other.pt",
                  "image as model": source.path,
                  "model without target intensities": tmp_path / "old.pt"}.get(problem, model)
    out, std = tmp_path / "out.nii.gz", tmp_path / "std.nii.gz"
    args = ["translate-scan", "--model", str(model_path), "--source", str(image), "--out", str(out)]
    samples = ["--n-samples", "1", "--std", str(std)] if problem == "std of one sample" else []
    start = ["--start", "atlas_map", "--target-contrast", "T2starw"] if "atlas start" in problem else []
    assert expected in _error(capsys, *args, *samples, *SAMPLING, *start)  # start last: it overrides SAMPLING's
    assert list(tmp_path.glob("out*")) == [] and not std.exists()


def test_invert_start_is_the_negated_source_on_the_target_quantiles():
    source = Volume(np.array([[[-1.0, -0.5, 0.0, 0.5, 1.0]]], dtype=np.float32), np.eye(4))
    mask = np.array([[[False, True, True, True, True]]])
    quantiles = (np.linspace(0, 1, 301) ** 2).astype(np.float32)  # a skewed target
    loaded = LoadedModel(model=None, schedule=None, config=None, target_quantiles=quantiles)
    start = scan.scan_start("invert", source, mask, loaded, np.zeros_like(source.data), (0.5, 99.5))
    assert start[0, 0, 0] == BACKGROUND
    # darkest brain voxel -> the target's highest quantile (level 1), brightest -> level 1/4, the others
    # at levels 3/4 and 1/2, where the skewed target's quantiles are 9/16, 1/4 and 1/16
    np.testing.assert_allclose(start[0, 0, 1:], [1.0, 9 / 16, 1 / 4, 1 / 16], atol=1e-3)


def test_one_scan_starts_from_the_workflows_map(tmp_path):
    """The training slices keep the volumes' brain quantiles, which model.pt carries: one scan's invert start
    is then the workflow's invert image of the same case, to the bit."""
    from midiffusion.diffusion.slices import build_training_slices

    rng = np.random.default_rng(0)
    mask = np.zeros((12, 12, 6), bool)
    mask[2:10, 2:10, 1:5] = True
    volumes = [np.where(mask, rng.normal(k * 0.2, 0.3, mask.shape).clip(-1, 1), BACKGROUND) for k in range(3)]
    paths = [save_volume(tmp_path / f"t1_{k}.nii.gz", v, np.eye(4)) for k, v in enumerate(volumes)]
    mask_path = save_volume(tmp_path / "mask.nii.gz", mask, np.eye(4), dtype=np.uint8)
    build_training_slices(paths, [mask_path] * 3, 8, tmp_path / "slices.npz")
    quantiles = np.load(tmp_path / "slices.npz")["target_quantiles"]
    source = Volume(np.where(mask, rng.uniform(-1, 1, mask.shape), BACKGROUND).astype(np.float32), np.eye(4))
    loaded = LoadedModel(model=None, schedule=None, config=None, target_quantiles=quantiles)
    one_scan = scan.scan_start("invert", source, mask, loaded, np.zeros_like(source.data), (0.5, 99.5))
    references = [(load_volume(path), mask) for path in paths]
    workflow = invert(BaselineInputs(source, source, mask, references))
    np.testing.assert_array_equal(one_scan, workflow)


def test_contrast_comes_from_the_file_name_or_the_option():
    assert scan.scan_contrast(Path("my_PDw.nii")) == "PDw"
    assert scan.scan_contrast(Path("my_T2w.nii.gz"), "T1w") == "T1w"


def test_segment_scan_names_a_missing_dataset_and_writes_nothing(tmp_path, capsys, source):
    out = tmp_path / "seg.nii.gz"
    message = _error(capsys, "segment-scan", "--image", str(source.path), "--out", str(out),
                     "--root", str(tmp_path / "nnunet"))
    assert "expected one nnU-Net dataset Dataset501_*, found none" in message
    assert not out.exists()


def test_segment_scan_lists_the_trained_models_when_the_trainer_has_none(tmp_path, capsys, source):
    trained = "nnUNetTrainer_midiffusion_quick__nnUNetPlans__2d"
    (tmp_path / "nnunet" / "nnUNet_results" / "Dataset501_T1w" / trained).mkdir(parents=True)
    out = tmp_path / "seg.nii.gz"
    message = _error(capsys, "segment-scan", "--image", str(source.path), "--out", str(out),
                     "--root", str(tmp_path / "nnunet"), "--trainer", "nnUNetTrainer_other")
    assert "no trained nnU-Net model for trainer nnUNetTrainer_other" in message and trained in message
    assert not out.exists()


@pytest.mark.slow
def test_translate_and_segment_a_raw_scan_with_the_ci_models(ci_run, tmp_path):
    """The real road: a test subject's raw source through the ci run's diffusion model and nnU-Net."""
    ci = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    subject = sorted((ci_run / "results/methods/midiffusion").glob("sub-*_T2w.nii.gz"))[0].name.split("_")[0]
    raw = ci_run / "results/cohort" / subject / "anat" / f"{subject}_T2w.nii.gz"
    out, seg = tmp_path / "T1w_like.nii.gz", tmp_path / "seg.nii.gz"
    # the default start, atlas_match: the head model's T1w image registered by the scan's brain extraction
    assert main(["translate-scan", "--model", str(ci_run / "results/diffusion/model.pt"), "--source", str(raw),
                 "--out", str(out), "--voxel-mm", str(ci["phantom"]["voxel_mm"]), *SAMPLING,
                 "--start", "atlas_match"]) == 0
    nnunet = ci["nnunet"]
    assert main(["segment-scan", "--image", str(out), "--out", str(seg), "--root", str(ci_run / "results/nnunet"),
                 "--dataset-id", str(nnunet["dataset_id"]), "--trainer", nnunet["trainer"],
                 "--num-processes", str(nnunet["num_processes"]), "--device", "cpu"]) == 0
    source, labels = load_volume(raw), load_volume(seg)
    assert labels.data.shape == source.data.shape
    np.testing.assert_allclose(labels.affine, source.affine, atol=1e-4)
    assert set(np.unique(labels.data)) <= {0, 1, 2, 3} and (labels.data > 0).any()
