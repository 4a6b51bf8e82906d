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
NNUNET_DATASET = f"Dataset{NNUNET.get('dataset_id', 501):03d}_{TARGET}"
NNUNET_MODEL = (
    f"{NNUNET_ROOT}/nnUNet_results/{NNUNET_DATASET}/{NNUNET['trainer']}__nnUNetPlans__"
    f"{NNUNET.get('configuration', '2d')}/fold_all/checkpoint_final.pth"
)


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    source="|".join(SOURCES),
    method="[A-Za-z0-9_]+",


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


def nnunet_args(predict=False):
    """The nnU-Net model's CLI options; predict=True adds the prediction options."""
    args = (
        f"--root {NNUNET_ROOT} --dataset-id {NNUNET.get('dataset_id', 501)} "
        f"--configuration {NNUNET.get('configuration', '2d')} --trainer {NNUNET['trainer']} "
        f"--num-processes {NNUNET.get('num_processes', 2)}"
    )
    return args + ("" if NNUNET.get("mirroring", True) or not predict else " --no-mirroring")
