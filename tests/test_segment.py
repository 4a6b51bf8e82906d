"""nnU-Net wrapper: dataset export, trainer lookup, and a real tiny plan/train/predict."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import yaml

from conftest import ROOT, snakemake
from midiffusion.cohort import read_split
from midiffusion.io import InputError, save_volume
from midiffusion.layout import (
    NNUNET_INTENSITIES, NNUNET_INTENSITIES_KEY, NNUNET_ROOT, SPLIT_FILE, check_run_nnunet, nnunet_checkpoint,
    preprocessed_dir,
)
from midiffusion import segment
from midiffusion.segment import (
    Case, NnunetDirs, export_training_set, model_folder, plan_and_preprocess, predict, train, training_curve,
)

SHAPE = (24, 24, 16)
# a non-trivial grid (anisotropic voxels, shifted origin) so that affine round trips are tested
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])
AFFINE[:3, 3] = (-12.0, -14.0, 5.0)
CI = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
CI_TRAINER = CI["nnunet"]["trainer"]


def _blob_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Nested ellipsoids WM in GM in CSF at a random centre; image: tissue means + noise in [-1, 1]."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).astype(float)
    centre = np.array(SHAPE) / 2 + rng.uniform(-2, 2, size=3)
    radius = np.sqrt((((grid - centre) / (np.array(SHAPE) * 0.4)) ** 2).sum(-1))
    label = np.select([radius < 0.45, radius < 0.75, radius < 1.0], [3, 2, 1], 0).astype(np.uint8)
    means = np.array([-1.0, 0.8, 0.0, 0.5])  # background, CSF, GM, WM (T1w-like ordering is irrelevant)
    image = np.clip(means[label] + rng.normal(0, 0.05, SHAPE) * (label > 0), -1, 1)
    return image.astype(np.float32), label


def _write_cases(folder: Path, n: int, seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        image, label = _blob_case(rng)
        case = Case(f"sub-{i:02d}", folder / f"sub-{i:02d}_T1w.nii.gz", folder / f"sub-{i:02d}_dseg.nii.gz")
        save_volume(case.image, image, AFFINE)
        save_volume(case.label, label, AFFINE, dtype=np.uint8)
        cases.append(case)
    return cases


def test_env_points_nnunet_at_the_root_and_the_project_trainers(tmp_path):
    env = NnunetDirs(tmp_path / "nnunet").env(num_processes=1)
    assert Path(env["nnUNet_raw"]) == (tmp_path / "nnunet" / "nnUNet_raw").resolve()
    assert Path(env["nnUNet_results"]).parent == Path(env["nnUNet_preprocessed"]).parent
    assert (Path(env["nnUNet_extTrainer"]) / "nnUNetTrainer_midiffusion.py").exists()
    assert env["nnUNet_n_proc_DA"] == "1" and env["nnUNet_def_n_proc"] == "1"


def test_nnunet_lookup_finds_the_project_trainers(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    # the lookup reads nnUNet_extTrainer from os.environ; monkeypatch restores it afterwards
    monkeypatch.setenv("nnUNet_extTrainer", NnunetDirs(Path(".")).env()["nnUNet_extTrainer"])
    ci = recursive_find_trainer_class_by_name(CI_TRAINER)
    quick = recursive_find_trainer_class_by_name("nnUNetTrainer_midiffusion_quick")
    assert issubclass(ci, nnUNetTrainer) and issubclass(quick, nnUNetTrainer)
    assert (ci.epochs, ci.iterations) == (2, 4)
    assert quick.epochs * quick.iterations < 1000 * 250
    assert recursive_find_trainer_class_by_name("nnUNetTrainer") is nnUNetTrainer


def test_export_writes_a_dataset_that_passes_nnunet_integrity_check(tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    cases = _write_cases(tmp_path / "in", 3)
    folder = export_training_set(cases, NnunetDirs(tmp_path / "nnunet"), 7, "T1w", channel_name="T1w")
    assert folder == tmp_path / "nnunet" / "nnUNet_raw" / "Dataset007_T1w"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
    assert meta["numTraining"] == 3 and meta["channel_names"] == {"0": "T1w"}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir())[0] == "sub-00_0000.nii.gz"
    label = nib.load(folder / "labelsTr" / "sub-01.nii.gz")
    assert label.get_data_dtype() == np.uint8 and np.allclose(label.affine, AFFINE)
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem

    # a rerun with fewer cases replaces the dataset instead of mixing old and new files
    export_training_set(cases[:2], NnunetDirs(tmp_path / "nnunet"), 7, "T1w")
    assert len(list((folder / "labelsTr").iterdir())) == 2


def test_export_rejects_a_bad_label_value_naming_the_file(tmp_path):
    cases = _write_cases(tmp_path, 2)
    save_volume(cases[1].label, np.full(SHAPE, 5, np.uint8), AFFINE, dtype=np.uint8)
    with pytest.raises(InputError, match=r"sub-01_dseg\.nii\.gz: label values .*found 5$"):
        export_training_set(cases, NnunetDirs(tmp_path / "nnunet"), 1, "T1w")
    assert not (tmp_path / "nnunet" / "nnUNet_raw" / "Dataset001_T1w").exists()


def test_export_rejects_duplicate_case_ids(tmp_path):
    cases = _write_cases(tmp_path, 1) * 2
    with pytest.raises(InputError, match="duplicate case ids"):
        export_training_set(cases, NnunetDirs(tmp_path / "nnunet"), 1, "T1w")


def test_predict_without_a_trained_model_names_the_checkpoint(tmp_path):
    dirs = NnunetDirs(tmp_path / "nnunet")
    export_training_set(_write_cases(tmp_path, 1), dirs, 3, "T1w")
    with pytest.raises(InputError, match=r"fold_all/checkpoint_final\.pth"):
        predict(dirs, 3, {"a": tmp_path / "sub-00_T1w.nii.gz"}, tmp_path / "out", trainer=CI_TRAINER)


def test_predict_and_the_workflow_refuse_nnunet_data_made_for_other_intensities(tmp_path):
    """A model or dataset whose dataset.json does not record the current intensities (made by an earlier
    version) would read shifted inputs it never learned: predict stops before nnU-Net runs, and the workflow's
    start-up check (check_run_nnunet) before any job, each naming the folder and the cure."""
    dirs = NnunetDirs(tmp_path / "nnunet")
    export_training_set(_write_cases(tmp_path, 1), dirs, 3, "T1w")
    model = model_folder(dirs, 3, "2d", CI_TRAINER)
    checkpoint = nnunet_checkpoint(model)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    raw_meta = dirs.raw / "Dataset003_T1w" / "dataset.json"
    shutil.copy(raw_meta, model / "dataset.json")  # as nnU-Net copies it at training
    check_run_nnunet(dirs.root)
    meta = json.loads(raw_meta.read_text())
    assert meta.pop(NNUNET_INTENSITIES_KEY) == NNUNET_INTENSITIES
    (model / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=rf"{model}: made from images .*delete {dirs.root}"):
        predict(dirs, 3, {"a": tmp_path / "sub-00_T1w.nii.gz"}, tmp_path / "out", trainer=CI_TRAINER)
    with pytest.raises(InputError, match=rf"{model}: made from images"):
        check_run_nnunet(dirs.root)
    shutil.copy(raw_meta, model / "dataset.json")
    raw_meta.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=rf"{raw_meta.parent}: made from images"):
        check_run_nnunet(dirs.root)


def test_the_workflow_refuses_a_run_folder_with_earlier_nnunet_models(tmp_path):
    """A run folder resumed after an upgrade: the dry run stops before any job, naming the stale model."""
    model = NNUNET_ROOT / "nnUNet_results" / "Dataset501_T1w" / "nnUNetTrainer__nnUNetPlans__2d"
    (tmp_path / model).mkdir(parents=True)
    (tmp_path / model / "dataset.json").write_text(json.dumps({"name": "T1w"}))
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert f"{model}: made from images as an earlier midiffusion" in result.stdout + result.stderr


def test_a_failing_nnunet_command_raises_with_its_output(tmp_path):
    dirs = NnunetDirs(tmp_path / "nnunet")
    dirs.raw.mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"(?s)midiffusion.nnunet_plan -d 42 .*failed.*last output:.*ID 42"):
        plan_and_preprocess(dirs, 42, num_processes=1)


def test_planning_replaces_the_fingerprint_of_earlier_training_images(tmp_path):
    """nnU-Net keeps a dataset's fingerprint (voxel sizes, shapes) unless told otherwise: a rerun whose
    training images changed must not plan, and so resample every image, from the old one."""
    dirs = NnunetDirs(tmp_path / "nnunet")
    export_training_set(_write_cases(tmp_path, 2), dirs, 5, "T1w")
    fingerprint = dirs.preprocessed / "Dataset005_T1w" / "dataset_fingerprint.json"
    fingerprint.parent.mkdir(parents=True)
    fingerprint.write_text(json.dumps({"spacings": [[3.0, 3.0, 3.0]] * 3, "shapes_after_crop": [[8, 8, 8]] * 3}))
    plan_and_preprocess(dirs, 5, num_processes=1)
    planned = json.loads(fingerprint.read_text())
    assert planned["spacings"] == [[1.5, 1.0, 1.0]] * 2  # AFFINE's voxel sizes, in nnU-Net's axis order
    # the images' [-1, 1] as nnU-Net gets them, shifted to [0, 2] (nnunet_intensities)
    assert planned["foreground_intensity_properties_per_channel"]["0"]["percentile_99_5"] <= 2.0


@pytest.mark.slow
def test_predict_with_the_ci_runs_nnunet_takes_any_naming(tmp_path, ci_run):
    """The ci workflow planned and trained its T1w nnU-Net through this module (its rules call
    plan_and_preprocess and train); predicting takes volumes named, and compressed or not, as other code
    writes them, and gives back their grids."""
    dirs = NnunetDirs(ci_run / NNUNET_ROOT)
    dataset_id, target = CI["nnunet"]["dataset_id"], CI["data"]["target"]
    checkpoint = nnunet_checkpoint(model_folder(dirs, dataset_id, "2d", CI_TRAINER))
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["current_epoch"] == 2
    subject = read_split(ci_run / SPLIT_FILE)["test"][0]
    image = ci_run / preprocessed_dir(subject) / f"{target}_norm.nii.gz"
    plain = tmp_path / "translated.nii"
    source = nib.load(image)
    save_volume(plain, source.get_fdata(), source.affine)
    inputs = {"subj-a": image, "subj-b": plain}
    outputs = predict(dirs, dataset_id, inputs, tmp_path / "seg", trainer=CI_TRAINER, device="cpu", num_processes=0)
    assert outputs == {case: tmp_path / "seg" / f"{case}.nii.gz" for case in inputs}
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["subj-a.nii.gz", "subj-b.nii.gz"]
    for path in outputs.values():
        seg = nib.load(path)
        assert seg.shape == source.shape and np.allclose(seg.affine, source.affine, atol=1e-4)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_a_seeded_training_repeats_exactly_and_another_seed_does_not(tmp_path):
    """With augmentation in the training process, the same seed trains the same network."""
    dirs = NnunetDirs(tmp_path / "nnunet")
    export_training_set(_write_cases(tmp_path, 3), dirs, 7, "T1w")
    plan_and_preprocess(dirs, 7, num_processes=1)

    def trained_weights(seed: int) -> dict[str, torch.Tensor]:
        checkpoint = train(dirs, 7, trainer=CI_TRAINER, device="cpu", num_processes=0, seed=seed)
        weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
        shutil.rmtree(checkpoint.parent)  # the next training starts afresh instead of resuming
        return weights

    first, again, other = trained_weights(0), trained_weights(0), trained_weights(1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_training_curve_reads_the_checkpoints_log(tmp_path):
    log = {"train_losses": [-0.1, -0.3], "val_losses": [-0.2, -0.35], "mean_fg_dice": [np.float64(0.4), 0.6],
           "ema_fg_dice": [0.4, 0.42], "epoch_start_timestamps": [0.0, 1.0]}
    torch.save({"network_weights": {}, "logging": log}, tmp_path / "checkpoint_final.pth")
    curve = training_curve(tmp_path / "checkpoint_final.pth", tmp_path / "curve.csv").read_text().splitlines()
    assert curve == ["epoch,train_loss,val_loss,pseudo_dice,ema_pseudo_dice", "0,-0.1,-0.2,0.4,0.4",
                     "1,-0.3,-0.35,0.6,0.42"]
    torch.save({"network_weights": {}}, tmp_path / "bare.pth")
    with pytest.raises(InputError, match="bare.pth: no nnU-Net training log"):
        training_curve(tmp_path / "bare.pth", tmp_path / "bare.csv")
    assert not (tmp_path / "bare.csv").exists()


@pytest.mark.parametrize("checkpoint_after_plans, resumes", [(True, True), (False, False)])
def test_training_resumes_only_from_a_checkpoint_newer_than_its_plans(tmp_path, monkeypatch, checkpoint_after_plans,
                                                                      resumes):
    """A killed nnU-Net training goes on from checkpoint_latest.pth; one left from older plans (new data) does not."""
    dirs = NnunetDirs(tmp_path / "nnunet")
    plans = dirs.preprocessed / "Dataset901_T1w" / "nnUNetPlans.json"
    plans.parent.mkdir(parents=True)
    final = nnunet_checkpoint(model_folder(dirs, 901, "2d", CI_TRAINER), "all")
    final.parent.mkdir(parents=True)
    first, second = (plans, final.with_name("checkpoint_latest.pth"))[:: 1 if checkpoint_after_plans else -1]
    first.write_text("{}")
    second.write_text("{}")
    os.utime(first, (1_000_000, 1_000_000))  # written before the other
    calls = []

    def fake_nnunet(command, dirs, num_processes, extra_env=None):
        calls.append(command)
        final.write_bytes(b"trained")

    monkeypatch.setattr(segment, "_run_nnunet", fake_nnunet)
    assert train(dirs, 901, trainer=CI_TRAINER, device="cpu") == final
    assert ("--c" in calls[0]) == resumes


def test_nnunet_gets_the_background_as_zero_so_that_it_crops_to_the_brain(tmp_path):
    """Training images and prediction inputs alike are shifted so that BACKGROUND is 0: nnU-Net then crops
    each case to the brain's box instead of the whole volume."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    case = _write_cases(tmp_path / "in", 1)[0]
    folder = export_training_set([case], NnunetDirs(tmp_path / "nnunet"), 7, "T1w")
    written = np.asarray(nib.load(folder / "imagesTr" / "sub-00_0000.nii.gz").dataobj)
    image = np.asarray(nib.load(case.image).dataobj)
    np.testing.assert_allclose(written, image + 1.0, atol=1e-6)
    assert (written[np.asarray(nib.load(case.label).dataobj) == 0] == 0).all()
    cropped, _, _ = crop_to_nonzero(written[None])
    assert cropped.size < 0.7 * written.size  # the blob's box, not the volume

    grid = segment._stage_input(case.image, tmp_path / "case_0000.nii.gz")
    assert grid.shape == SHAPE and not (tmp_path / "case_0000.nii.gz").is_symlink()
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "case_0000.nii.gz").dataobj), written)
