# Config validation (defaults filled from the schema), the cohort (subjects and split), path layouts
# and every input function the rules use. Nothing here imports torch: `snakemake -n` stays fast.
import json
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

from midiffusion.cohort import resolve_cohort
from midiffusion.io import write_json
from midiffusion.layout import (
    NNUNET_PLANS, NNUNET_ROOT, SPLIT_FILE, bids_image, check_run_nnunet, dataset_ids, dataset_name, nnunet_checkpoint,
    nnunet_model_dir, preprocessed_dir,
)
from midiffusion.methods import METHODS, PRODUCERS, case_name, producers, trainer_name


validate(config, schema="../schemas/config.schema.yaml", set_default=True)

# Rules call the `midiffusion` command: put the environment snakemake runs from first on PATH, so
# that `.venv/bin/snakemake` works without activating the venv (a conda env, when used, goes first).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
# The rules' conda envs install this checkout as -e ${MIDIFFUSION_ROOT}[...] (envs/README.md); pip expands it.
os.environ["MIDIFFUSION_ROOT"] = str(Path(workflow.basedir).parent)

DATA = config["data"]
TARGET = DATA["target"]
SOURCES = DATA["sources"]
CONTRASTS = [TARGET, *SOURCES]
BOUND_SOURCES = config["supervised_bound"]["sources"] or SOURCES  # one nnU-Net each, trained with labels
PHANTOM = DATA["layout"] == "phantom"
# Brain extraction by template registration leaves the registered template (atlas_map's reference).
TEMPLATE_REGISTERED = config["preprocess"]["brain_extraction"] == "template"

# Subjects, split and held-out anatomy (a bad image or value is an InputError now, before any job);
# rule cohort_split writes them to SPLIT_FILE for the scripts that read a finished run.
COHORT = resolve_cohort(config)
for note in COHORT.notes:
    print(note, file=sys.stderr)
IMAGES = COHORT.images
SPLIT = COHORT.split
HELD_OUT, HELD_OUT_ANATOMY = COHORT.held_out, COHORT.held_out_anatomy
ANATOMIES = COHORT.anatomies  # tables report the held-out anatomy's subjects as separate rows
ANATOMY_OPTION = ("--anatomy " + " ".join(f"{s}={a}" for s, a in ANATOMIES.items())) if ANATOMIES else ""
METHODS_RUN = config["methods"]
SEGMENTERS_RUN = list(dict.fromkeys(METHODS[m].segmenter for m in METHODS_RUN))
NNUNET = config["nnunet"]
TRAINERS = {s: trainer_name(s, NNUNET["trainer"], NNUNET["rival_schedule"]) for s in SEGMENTERS_RUN}
PRE = str(preprocessed_dir("{subject}"))
NNUNET_IDS = dataset_ids(NNUNET["dataset_id"], CONTRASTS)  # InputError if they go past 999
NNUNET_DATASETS = {c: dataset_name(i, c) for c, i in NNUNET_IDS.items()}  # contrast -> dataset folder
NNUNET_DATASET = NNUNET_DATASETS[TARGET]
FIGURE_SUBJECT = config["figure_subject"] or SPLIT.test[0]
check_run_nnunet(NNUNET_ROOT)  # a resumed run's nnU-Net data from an earlier version: refused now, not hours later


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    source="|".join(SOURCES),
    method="|".join(re.escape(m) for m in METHODS),
    producer="|".join(PRODUCERS),
    trainer="|".join({NNUNET["trainer"], *TRAINERS.values()}),  # the supervised bound uses the target's
    dataset="|".join(NNUNET_DATASETS.values()),
    case=f"sub-[A-Za-z0-9]+(_({'|'.join(SOURCES)}))?",


def anatomy_maps(wildcards):
    """A held-out phantom subject's anatomy maps (rule anatomy); none for the template's subjects."""
    if wildcards.subject not in HELD_OUT:
        return []
    return f"results/anatomy/{HELD_OUT_ANATOMY}_{config['phantom']['voxel_mm']}mm.nii.gz"


def preprocessed(subject, name):
    return f"{PRE.format(subject=subject)}/{name}.nii.gz"


def normalised(subject, contrast):
    return preprocessed(subject, f"{contrast}_norm")


def nnunet_model(dataset, trainer=NNUNET["trainer"]):
    folder = nnunet_model_dir(NNUNET_ROOT / "nnUNet_results", dataset, trainer, NNUNET["configuration"])
    return str(nnunet_checkpoint(folder))


def method_image(method, subject, source):
    """The image a method segments, of a test subject and source contrast: its producer's (one file
    per subject where the image does not depend on the source, see midiffusion.methods)."""
    return f"results/methods/{METHODS[method].producer}/{case_name(method, subject, source)}.nii.gz"


def method_segmentation(method, subject, source):
    return f"results/segmentations/{method}/{case_name(method, subject, source)}.nii.gz"


def method_cases(method):
    """(image, segmentation) of every distinct case of a method."""
    return sorted({(method_image(method, s, c), method_segmentation(method, s, c)) for s in SPLIT.test for c in SOURCES})


def segmenter_cases(segmenter):
    """(image, segmentation) of every case of the configured methods that this segmenter reads."""
    return [case for m in METHODS_RUN if METHODS[m].segmenter == segmenter for case in method_cases(m)]


def case_source(wildcards):
    """The source contrast in a {case} wildcard (sub-<id>_<source>), or the target for sub-<id>."""
    _, _, source = wildcards.case.partition("_")
    return source or TARGET


def case_subject(wildcards):
    return wildcards.case.split("_")[0].removeprefix("sub-")


def translate_inputs(wildcards):
    """The model and brain mask; where the method is guided by the source, the normalised source and,
    unless sampling.start is noise, that baseline's image of the same case (the SDEdit start)."""
    subject = case_subject(wildcards)
    inputs = {"model": "results/diffusion/model.pt", "mask": preprocessed(subject, "brainmask")}
    if PRODUCERS[wildcards.producer].uses_source:
        source = case_source(wildcards)
        inputs["source"] = normalised(subject, source)
        if start := sampling_start(subject, source):
            inputs["start"] = start
    return inputs


def sampling_start(subject, source):
    """The SDEdit start of a case, sampling.start's image of it; [] for the noise start."""
    start = config["sampling"]["start"]
    return [] if start == "noise" else method_image(start, subject, source)


def start_option(wildcards, input):
    """The --start option of translate and benchmark-sampling: the rule's SDEdit start input, if it has one."""
    return f"--start {input.start}" if input.get("start") else ""


def labels_path(subject):
    """Labels on the target grid: the phantom's truth, the user's files, or None (Atropos makes them)."""
    if PHANTOM:
        return bids_image(DATA["root"], subject, "dseg")
    if DATA["labels"]:
        return DATA["labels"].format(subject=subject)
    return None


def preprocess_inputs(wildcards):
    inputs = {"image": str(IMAGES[wildcards.subject][TARGET])}
    if labels_path(wildcards.subject):
        inputs["labels"] = str(labels_path(wildcards.subject))
    return inputs


def preprocess_args(wildcards, input):
    labels = f"--labels {input.labels}" if hasattr(input, "labels") else ""
    pre = config["preprocess"]
    return (
        f"--image {TARGET}={input.image} {labels} {n4_option()} --brain-extraction {pre['brain_extraction']} "
        f"{percentiles_option()}"
    )


def register_inputs(wildcards):
    """A source image and its subject's preprocessed target (its grid, brain mask and folder)."""
    inputs = {"source": str(IMAGES[wildcards.subject][wildcards.source]),
              "target": preprocessed(wildcards.subject, TARGET), "mask": preprocessed(wildcards.subject, "brainmask")}
    if PHANTOM:
        inputs["misalignment"] = str(bids_image(DATA["root"], wildcards.subject, "misalignment", ".json"))
    return inputs


def register_args(wildcards, input):
    truth = f"--misalignment {input.misalignment}" if PHANTOM else ""
    return f"{truth} {n4_option()} --registration {config['preprocess']['registration']} {percentiles_option()}"


def n4_option():
    return "" if config["preprocess"]["n4"] else "--no-n4"


def percentiles_option():
    return "--percentiles " + " ".join(map(str, config["preprocess"]["percentiles"]))


def json_option(section):
    """A config section as a JSON string for `--options` (shell-quoted by Snakemake's :q)."""
    return json.dumps(config[section], sort_keys=True)


def dataset_contrast(wildcards):
    """The contrast of the nnU-Net dataset in the {dataset} wildcard (Dataset<id>_<contrast>)."""
    return wildcards.dataset.split("_", 1)[1]


def nnunet_args(contrast=TARGET, predict=False, trainer=NNUNET["trainer"], train=False):
    """The CLI options of an nnU-Net model of a contrast; predict=True adds the prediction options,
    train=True the training's (its augmentation workers and seed). trainer=None leaves the trainer out, for
    the steps before training that every trainer shares: a change of schedule then keeps the exported and
    planned dataset."""
    processes = NNUNET["augmentation_processes"] if train else NNUNET["num_processes"]
    args = (
        f"--root {NNUNET_ROOT} --dataset-id {NNUNET_IDS[contrast]} --configuration {NNUNET['configuration']} "
        f"--num-processes {processes}" + (f" --trainer {trainer}" if trainer else "")
    )
    if train:
        args += f" --seed {NNUNET['seed']}"
    return args + ("" if NNUNET["mirroring"] or not predict else " --no-mirroring")


def evaluation_cases(wildcards):
    """--case arguments: subject, source, segmentation, labels, image, real target, brain mask."""
    m = wildcards.method
    return " ".join(
        f"--case {s} {c} {method_segmentation(m, s, c)} {preprocessed(s, 'labels')} {method_image(m, s, c)} "
        f"{normalised(s, TARGET)} {preprocessed(s, 'brainmask')}"
        for s in SPLIT.test
        for c in SOURCES
    )


def intensity_bound_cases():
    """--case arguments: subject, contrast, normalised image, labels, brain mask; target first."""
    return " ".join(
        f"--case {s} {c} {normalised(s, c)} {preprocessed(s, 'labels')} {preprocessed(s, 'brainmask')}"
        for s in SPLIT.test
        for c in CONTRASTS
    )


def intensity_bound_corr_cases():
    """--case arguments: subject, source, normalised source, normalised target, brain mask."""
    return " ".join(
        f"--case {s} {c} {normalised(s, c)} {normalised(s, TARGET)} {preprocessed(s, 'brainmask')}"
        for s in SPLIT.test
        for c in SOURCES
    )


SUPERVISED_CURVES = {f"supervised_{c}": c for c in BOUND_SOURCES}  # nnunet_curve name -> the bound's contrast


def curve_model(name):
    """The nnU-Net model behind results/nnunet_curves/{name}.csv: a segmenter's or the supervised bound's."""
    if name in SUPERVISED_CURVES:
        return nnunet_model(NNUNET_DATASETS[SUPERVISED_CURVES[name]])
    return nnunet_model(NNUNET_DATASET, TRAINERS[name])


def supervised_bound_cases():
    """(subject, contrast, segmentation, labels). The target's row is the oracle."""
    cases = []
    for s in SPLIT.test:
        cases.append((s, TARGET, method_segmentation("oracle", s, SOURCES[0]), preprocessed(s, "labels")))
        cases += [
            (s, c, f"results/segmentations/supervised/sub-{s}_{c}.nii.gz", preprocessed(s, "labels"))
            for c in BOUND_SOURCES
        ]
    return cases


def grid_items(wildcards):
    """SOURCE/COLUMN/KIND -> path for the translation grid of FIGURE_SUBJECT."""
    s = FIGURE_SUBJECT
    items = {}
    for c in SOURCES:
        items[f"{c}/source/image"] = normalised(s, c)
        for m in (m for m in METHODS_RUN if METHODS[m].in_grid):
            items[f"{c}/{m}/image"] = method_image(m, s, c)
            items[f"{c}/{m}/segmentation"] = method_segmentation(m, s, c)
        items[f"{c}/target/image"] = normalised(s, TARGET)
        items[f"{c}/target/segmentation"] = preprocessed(s, "labels")
    return items
