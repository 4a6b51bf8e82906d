"""The ci configuration through a real snakemake run: every rule, every method, tables and figures."""

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import ROOT, snakemake
from midiffusion import methods as registry
from midiffusion.cohort import read_split
from midiffusion.io import InputError, load_volume
from midiffusion.layout import SPLIT_FILE, dataset_ids
from midiffusion.nnunet_trainers.nnUNetTrainer_midiffusion import CISchedule

CI = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
METHODS = CI["methods"]
SOURCES = CI["data"]["sources"]
# test subjects: the template's (split.n_test) and the held-out anatomy's (phantom.n_held_out)
N_TEST = CI["split"]["n_test"] + CI["phantom"]["n_held_out"]
N_SUBJECTS = CI["phantom"]["n_subjects"] + CI["phantom"]["n_held_out"]
BIDS_SUBJECTS = CI["split"]["n_test"] + 1  # one to train on: the test stops before nnU-Net

pytestmark = pytest.mark.slow


def test_tables_have_every_method_source_and_class(ci_run):
    long = pd.read_csv(ci_run / "results/tables/metrics_long.csv", keep_default_na=False)
    assert set(long["method"]) == set(METHODS)
    assert set(long["source"]) == set(SOURCES)
    dice = long[long["metric"] == "dice"]
    assert set(dice["class"]) == {"CSF", "GM", "WM", "mean"}
    values = pd.to_numeric(dice["value"], errors="coerce")
    assert values.between(0, 1).all()
    summary = (ci_run / "results/tables/summary.md").read_text()
    assert all(method in summary for method in METHODS)


def test_held_out_anatomy_subjects_are_reported_apart(ci_run):
    """The Colin27 phantom subject is built, tested (never trained on) and gets its own rows; the run's
    split file says so, and the nnU-Net and the diffusion model train on its train subjects only."""
    assert (ci_run / "results/cohort/sub-colin01/anat/sub-colin01_T2w.nii.gz").exists()
    long = pd.read_csv(ci_run / "results/tables/metrics_long.csv", keep_default_na=False, dtype={"subject": str})
    assert set(long.groupby("anatomy")["subject"].unique().map(tuple)) == {("colin01",), (long.loc[
        long["anatomy"] == "icbm152_2009a", "subject"].iloc[0],)}
    verdict = (ci_run / "results/tables/verdict.md").read_text()
    assert "| colin27 " in verdict and "| icbm152_2009a " in verdict
    trained_on = {path.name for path in (ci_run / "results/nnunet/nnUNet_raw").glob("*_T1w/imagesTr/*.nii.gz")}
    split = read_split(ci_run / SPLIT_FILE)
    assert split["held_out"] == ["colin01"] and split["held_out_anatomy"] == "colin27"
    assert split["anatomies"] == {s: "colin27" if s == "colin01" else "icbm152_2009a" for s in split["test"]}
    assert len(split["test"]) == N_TEST and not set(split["train"]) & set(split["test"])
    assert trained_on == {f"sub-{s}_0000.nii.gz" for s in split["train"]}


def test_translated_volumes_are_on_the_target_grid(ci_run):
    subject_dirs = sorted((ci_run / "results/preprocessed").iterdir())
    translated = sorted((ci_run / "results/methods/midiffusion").glob("sub-*_*.nii.gz"))
    assert translated
    for path in translated:
        subject = path.name.split("_")[0]
        target = load_volume(ci_run / "results/preprocessed" / subject / "T1w_norm.nii.gz")
        volume = load_volume(path)
        assert volume.data.shape == target.data.shape
        np.testing.assert_allclose(volume.affine, target.affine, atol=1e-5)
        assert volume.data.min() >= -1 and volume.data.max() <= 1
    assert subject_dirs


def test_segmentations_and_figures_written(ci_run):
    for method in METHODS:
        segmentations = list((ci_run / "results/segmentations" / method).glob("*.nii.gz"))
        per_subject = len(SOURCES) if registry.METHODS[method].uses_source else 1  # unguided, oracle: once
        assert len(segmentations) == per_subject * N_TEST
        assert set(np.unique(load_volume(segmentations[0]).data)) <= {0, 1, 2, 3}
    for figure in ("dice.png", "translation_grid.png", "sampler_curve.png"):
        assert (ci_run / "results/figures" / figure).stat().st_size > 10_000


def test_registration_table_shows_recovered_misalignment(ci_run):
    # only the test subjects' sources are registered: nothing reads a training subject's
    table = pd.read_csv(ci_run / "results/tables/registration.csv", dtype={"subject": str})
    assert len(table) == N_TEST * len(SOURCES)
    assert set(table["subject"]) == set(read_split(ci_run / SPLIT_FILE)["test"])
    voxel = CI["phantom"]["voxel_mm"]
    assert (table["error_before_mm"] > 1.0).all()
    assert (table["error_after_mm"] < voxel).all()


def test_intensity_bound_table_covers_every_contrast(ci_run):
    table = pd.read_csv(ci_run / "results/tables/intensity_bound.csv")
    assert set(table["contrast"]) == {CI["data"]["target"], *SOURCES}
    assert len(table) == N_TEST * (1 + len(SOURCES)) * 4
    assert table["dice"].between(0, 1).all()
    anatomies = set(table["anatomy"])  # the held-out anatomy's test subject in rows of its own
    assert len(anatomies) == 2 and CI["phantom"]["held_out_anatomy"] in anatomies
    header = (ci_run / "results/tables/intensity_bound.md").read_text().splitlines()[0]
    assert [cell.strip() for cell in header.split("|")[1:3]] == ["Anatomy", "Contrast"]


def test_intensity_bound_corr_table_sets_every_source_beside_the_translations(ci_run):
    table = pd.read_csv(ci_run / "results/tables/intensity_bound_corr.csv")
    assert len(table) == N_TEST * len(SOURCES)
    assert set(table["source"]) == set(SOURCES)
    assert {"midiffusion", "invert", "atlas_map"} <= set(table.columns)  # the translations' correlations
    assert table["bound"].between(-1, 1).all() and table["bound"].notna().all()


def test_supervised_bound_trains_one_nnunet_per_source(ci_run):
    snakemake(ci_run, "--cores", "2", "supervised_bound")
    target, dataset_id = CI["data"]["target"], CI["nnunet"]["dataset_id"]
    for k, source in enumerate(SOURCES, start=1):
        model = f"results/nnunet/nnUNet_results/Dataset{dataset_id + 100 * k:03d}_{source}"
        assert list((ci_run / model).glob("*/fold_all/checkpoint_final.pth"))
        curve = pd.read_csv(ci_run / f"results/nnunet_curves/supervised_{source}.csv")  # whether it levelled off
        assert len(curve) == CISchedule.epochs and curve["ema_pseudo_dice"].between(0, 1).all()
    table = pd.read_csv(ci_run / "results/tables/supervised_bound.csv")
    assert list(table["contrast"].unique()) == [target, *SOURCES]
    assert table["dice"].between(0, 1).all()
    long = pd.read_csv(ci_run / "results/tables/metrics_long.csv", keep_default_na=False)
    oracle = long[(long["method"] == "oracle") & (long["source"] == SOURCES[0]) & (long["metric"] == "dice")]
    oracle_dice = oracle.set_index(["subject", "class"])["value"].astype(float)
    target_dice = table[table["contrast"] == target].set_index(["subject", "class"])["dice"]
    assert target_dice.to_dict() == pytest.approx(oracle_dice.to_dict(), abs=1e-4)  # the target's row is the oracle


def test_supervised_bound_narrowed_to_one_source_trains_only_its_nnunet(tmp_path):
    """supervised_bound.sources: one source's nnU-Net, under the dataset id it has among all the sources."""
    source = SOURCES[-1]
    config = {**CI, "supervised_bound": {"sources": [source]}}
    configfile = tmp_path / "bound.yaml"
    configfile.write_text(yaml.safe_dump(config))
    planned = snakemake(tmp_path, "--dry-run", "supervised_bound", configfile=configfile).stdout
    trained = re.findall(r"nnUNet_results/(Dataset\d+_\w+)/\w+__", planned)
    ids = dataset_ids(CI["nnunet"]["dataset_id"], [CI["data"]["target"], *SOURCES])
    assert sorted(set(trained)) == sorted(f"Dataset{ids[c]:03d}_{c}" for c in (CI["data"]["target"], source))
    assert planned.count("rule supervised_predict:") == 1


def test_a_new_nnunet_schedule_retrains_without_exporting_the_dataset_again(ci_run, tmp_path):
    """nnunet.trainer changes the training and what follows it, not the dataset that every trainer shares."""
    configfile = tmp_path / "quick.yaml"
    configfile.write_text(yaml.safe_dump({**CI, "nnunet": {**CI["nnunet"], "trainer": "nnUNetTrainer_midiffusion_quick"}}))
    planned = snakemake(ci_run, "--dry-run", configfile=configfile).stdout
    assert "rule nnunet_train:" in planned and "nnUNetTrainer_midiffusion_quick__" in planned
    assert "rule nnunet_prepare:" not in planned and "rule nnunet_plan:" not in planned


def test_report_gathers_figures_and_tables_with_captions(ci_run):
    """After the supervised bound's test: the report of `all` and the bound holds every figure and table."""
    snakemake(ci_run, "--report", "report.html", "all", "supervised_bound")
    html = (ci_run / "report.html").read_text()
    for output in ("translation_grid.png", "dice.png", "sampler_curve.png", "loss.png", "summary.md", "verdict.md",
                   "intensity_bound.md", "intensity_bound_corr.md", "supervised_bound.md"):
        assert output in html, f"{output} missing from the report"
    for caption in ("voxelwise intensity classifier", "out of their reach"):  # intensity / supervised bound
        assert caption in html, f"caption text {caption!r} missing from the report"


def test_atropos_labels_agree_with_the_phantom_truth(ci_run):
    table = pd.read_csv(ci_run / "results/tables/atropos.csv")
    assert set(table["class"]) == {"CSF", "GM", "WM", "mean"}
    assert table.loc[table["class"] == "mean", "dice"].mean() > 0.5


def test_sampling_benchmark_compares_ddpm_and_ddim(ci_run):
    table = pd.read_csv(ci_run / "results/benchmarks/sampling.csv")
    assert set(table["sampler"]) == {"ddpm", "ddim"}
    calls_per_step = 1 if CI["sampling"]["guidance_scale"] == 1 else 2  # classifier-free guidance: two
    # From the SDEdit start, as the workflow translates: DDPM runs the steps below start_t0 T only.
    steps = CI["diffusion"]["timesteps"] if CI["sampling"]["start"] == "noise" else \
        round(CI["sampling"]["start_t0"] * CI["diffusion"]["timesteps"])
    assert table.loc[table["sampler"] == "ddpm", "network_calls"].item() == steps * calls_per_step
    # Dice of the nnU-Net segmentation of every setting's slices, next to the image metrics
    assert table[["dice_CSF", "dice_GM", "dice_WM", "dice_mean"]].notna().all().all()
    assert table["dice_mean"].between(0, 1).all()


def test_rerun_has_nothing_to_do(ci_run):
    result = snakemake(ci_run, "--cores", "1", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_schema_rejects_bad_config_with_readable_message(tmp_path):
    """Through snakemake once (the message a user reads); the other checks that run when the workflow
    starts, in-process: the schema's enums and the nnU-Net dataset ids of every contrast."""
    config = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    config["slices"]["sizee"] = 32
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--dry-run", configfile=bad, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "sizee" in output and "Additional properties" in output
    config["slices"].pop("sizee")
    config["sampling"]["sampler"] = "euler"
    with pytest.raises(WorkflowError, match="euler"):
        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    with pytest.raises(InputError, match="nnunet.dataset_id"):  # the FLAIR source's dataset would be 1050
        dataset_ids(850, [CI["data"]["target"], *SOURCES])


def test_ixi_config_trains_and_samples_as_the_default():
    """config/ixi.yaml promises the default's (CPU-sized) model and sampler: it sets none of their keys,
    so the schema's defaults (the default run's) apply, as they do to config/config.yaml."""
    default, ixi = (yaml.safe_load((ROOT / "config" / name).read_text()) for name in ("config.yaml", "ixi.yaml"))
    for section in ("slices", "diffusion", "sampling"):
        assert section not in ixi and section not in default, section


def test_ixi_folder_plans_every_complete_subject(tmp_path):
    """config/ixi.yaml on a folder with the real IXI naming: complete subjects planned, Atropos labels."""
    from midiffusion.io import save_volume

    data = tmp_path / "IXI"
    for subject in ["002-Guys-0828", "012-HH-1211", "013-HH-1212", "014-HH-1236"]:
        for contrast in ["T1", "T2", "PD"]:  # 4 voxels of 32 mm: a head-sized field of view
            save_volume(data / f"IXI{subject}-{contrast}.nii.gz", np.ones((4, 4, 4)), np.diag([32, 32, 32, 1]))
    (data / "IXI014-HH-1236-PD.nii.gz").unlink()
    config = yaml.safe_load((ROOT / "config" / "ixi.yaml").read_text())
    config["data"].update(root=str(data), bad_subjects="skip")
    config["split"]["n_test"] = 1
    configfile = tmp_path / "ixi.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--dry-run", configfile=configfile)
    assert f"subject 014: {data}: no PDw image" in result.stderr + result.stdout
    planned = result.stdout
    stats = planned.split("Job stats")[1].split("Reasons")[0]
    assert re.search(r"^preprocess\s", stats, re.M) and not re.search(r"^cohort\s", stats, re.M)  # no phantom
    for subject in ("002", "012", "013"):
        assert f"IXI{subject}-" in planned
    assert "--labels" not in planned  # no label files given: preprocessing makes Atropos labels


def test_bids_folder_with_flair_images_runs_the_ci_workflow(ci_run, tmp_path):
    """A user's BIDS folder whose source is `_FLAIR` (any BIDS suffix is a contrast): the ci run's own
    phantom files, copied as a plain BIDS dataset with its dseg labels, run through the ci workflow up to
    the FLAIR translations of every test subject (cohort check, preprocessing, training, sampling). Two
    subjects: one to train on, one to translate."""
    bids = tmp_path / "bids"
    for subject in sorted((ci_run / "results" / "cohort").glob("sub-0*"))[:BIDS_SUBJECTS]:
        for image in (subject / "anat").glob("*_*.nii.gz"):
            if image.name.endswith(("_T1w.nii.gz", "_FLAIR.nii.gz", "_dseg.nii.gz")):
                (bids / subject.name / "anat").mkdir(parents=True, exist_ok=True)
                shutil.copy(image, bids / subject.name / "anat" / image.name)
    config = {**CI, "data": {**CI["data"], "layout": "bids", "root": str(bids), "sources": ["FLAIR"],
                             "labels": str(bids / "sub-{subject}" / "anat" / "sub-{subject}_dseg.nii.gz")}}
    configfile = tmp_path / "bids_flair.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    workdir.mkdir()
    snakemake(workdir, "--cores", "1", str(SPLIT_FILE), configfile=configfile)
    split = read_split(workdir / SPLIT_FILE)
    targets = [f"results/methods/midiffusion/sub-{s}_FLAIR.nii.gz" for s in split["test"]]
    snakemake(workdir, "--cores", "2", *targets, configfile=configfile)
    assert len(split["train"] + split["test"]) == BIDS_SUBJECTS and split["test"] and not split["held_out"]
    for target in targets:
        translation = load_volume(workdir / target)
        assert np.isfinite(translation.data).all() and translation.data.max() > translation.data.min()


def test_rival_nnunets_train_on_the_target_schedule(ci_run):
    """The strong-augmentation and domain-randomised nnU-Nets exist, named for the target trainer's schedule."""
    dataset = f"Dataset{CI['nnunet']['dataset_id']:03d}_{CI['data']['target']}"
    for segmenter in ("strong_aug", "domain_rand"):
        trainer = registry.trainer_name(segmenter, CI["nnunet"]["trainer"])
        assert trainer.endswith(CI["nnunet"]["trainer"].removeprefix("nnUNetTrainer"))
        folder = ci_run / "results/nnunet/nnUNet_results" / dataset / f"{trainer}__nnUNetPlans__2d"
        assert (folder / "fold_all/checkpoint_final.pth").exists(), folder
    long = pd.read_csv(ci_run / "results/tables/metrics_long.csv", keep_default_na=False)
    rivals = long[long["method"].isin(["strong_aug", "domain_rand", "midiffusion+domain_rand"])]
    assert set(rivals["source"]) == set(SOURCES) and (rivals["metric"] == "corr").any()
