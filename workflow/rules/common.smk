# Config validation, the cohort (subjects and split) and the input functions.
import json
import os
import sys
from pathlib import Path

from snakemake.utils import validate

from midiffusion.baselines import BASELINES
from midiffusion.cohort import find_subjects, phantom_image, phantom_misalignment, phantom_subjects, split_subjects
from midiffusion.translate import DIFFUSION_METHODS


validate(config, schema="../schemas/config.schema.yaml")

# Rules call the `midiffusion` command: put the environment snakemake runs from first on PATH,
# so that `.venv/bin/snakemake` works without activating the venv.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

DATA = config["data"]
TARGET = DATA["target"]
SOURCES = DATA["sources"]
if TARGET in SOURCES:
    raise ValueError(f"config data.sources: {SOURCES} must not contain the target contrast {TARGET}")
unknown_methods = sorted(set(config["methods"]) - set(BASELINES) - set(DIFFUSION_METHODS))
if unknown_methods:
    raise ValueError(
        f"config methods: unknown {unknown_methods}; known are {sorted(BASELINES) + sorted(DIFFUSION_METHODS)}"
    )
PHANTOM = DATA["layout"] == "phantom"

if PHANTOM:
    SUBJECTS = phantom_subjects(config["phantom"]["n_subjects"])
    IMAGES = {
        s: {c: phantom_image(DATA["root"], s, c) for c in [TARGET, *SOURCES]}
        for s in SUBJECTS
    }
else:
    COHORT = find_subjects(DATA["layout"], DATA["root"], [TARGET, *SOURCES])
    if COHORT.skipped:
        print(f"Warning: {COHORT.skipped_message(DATA['root'])}", file=sys.stderr)
    IMAGES = COHORT.images
    SUBJECTS = sorted(IMAGES)
if DATA.get("subjects"):
    SUBJECTS = [s for s in SUBJECTS if s in set(DATA["subjects"])]
SPLIT = split_subjects(SUBJECTS, config["split"]["n_test"], config["split"]["seed"])
METHODS = config["methods"]
PRE = "results/preprocessed/sub-{subject}"
NNUNET = config["nnunet"]
NNUNET_ROOT = "results/nnunet"
# nnU-Net datasets in one root need distinct ids: the target's comes from the config, and each
# source contrast's (trained only for the supervised bound) is 100, 200, ... above it.
NNUNET_IDS = {c: NNUNET.get("dataset_id", 501) + 100 * k for k, c in enumerate([TARGET, *SOURCES])}
if max(NNUNET_IDS.values()) > 999:
    raise ValueError(
        f"config nnunet.dataset_id: ids {NNUNET_IDS} go past 999 (each source contrast takes the id "
        "100 above the previous one); choose a smaller dataset_id"
    )
NNUNET_DATASETS = {c: f"Dataset{i:03d}_{c}" for c, i in NNUNET_IDS.items()}  # contrast -> dataset folder
NNUNET_DATASET = NNUNET_DATASETS[TARGET]


def dataset_contrast(wildcards):
    """The contrast of the nnU-Net dataset in the {dataset} wildcard (Dataset<id>_<contrast>)."""
    return wildcards.dataset.split("_", 1)[1]


def nnunet_model(dataset):
    return (
        f"{NNUNET_ROOT}/nnUNet_results/{dataset}/{NNUNET['trainer']}__nnUNetPlans__"
        f"{NNUNET.get('configuration', '2d')}/fold_all/checkpoint_final.pth"
    )


NNUNET_MODEL = nnunet_model(NNUNET_DATASET)


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    source="|".join(SOURCES),
    method="[A-Za-z0-9_]+",
    dataset="|".join(NNUNET_DATASETS.values()),


def labels_path(subject):
    """Labels on the target grid: the phantom's truth, the user's files, or None (Atropos makes them)."""
    if PHANTOM:
        return phantom_image(DATA["root"], subject, "dseg")
    if DATA.get("labels"):
        return DATA["labels"].format(subject=subject)
    return None


def preprocessed(subject, name):
    return f"{PRE.format(subject=subject)}/{name}.nii.gz"


def json_option(section):
    """A config section as a JSON string for `--options` (shell-quoted by Snakemake's :q)."""
    return json.dumps(config.get(section, {}), sort_keys=True)


def nnunet_args(contrast=TARGET, predict=False):
    """The CLI options of a contrast's nnU-Net model; predict=True adds the prediction options."""
    args = (
        f"--root {NNUNET_ROOT} --dataset-id {NNUNET_IDS[contrast]} "
        f"--configuration {NNUNET.get('configuration', '2d')} --trainer {NNUNET['trainer']} "
        f"--num-processes {NNUNET.get('num_processes', 2)}"
    )
    return args + ("" if NNUNET.get("mirroring", True) or not predict else " --no-mirroring")
