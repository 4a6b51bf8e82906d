"""`midiffusion <command>`: one entry point for the commands you run by hand and the steps the
workflow's rules run. Each is a thin wrapper over a package function (importable from Python too);
heavy imports happen inside the command so that `--help` stays fast."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from .config import default, defaults, schema
from .io import InputError
from .layout import NNUNET_ROOT
from .methods import METHOD_ORDER, PRODUCERS, producers


def _pairs(values: list[str], what: str, kind: Callable[[str], Any] = Path) -> dict[str, Any]:
    """["KEY=VALUE", ...] -> {KEY: kind(VALUE)} (paths by default)."""
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise InputError(f"--{what}: expected KEY=VALUE, got {value!r}")
        pairs[key] = kind(item)
    return pairs


def _options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"--options: not valid JSON ({error})") from None
    if not isinstance(options, dict):
        raise InputError("--options: expected a JSON object")
    return options


def _add_nnunet_common(parser: argparse.ArgumentParser, required: bool = True, device: bool = True,
                       workflow_defaults: bool = False) -> None:
    """The options that name a trained nnU-Net. workflow_defaults: they default to the workflow's model
    (its nnU-Net root, workflow/rules/common.smk, and config section nnunet), so none is needed."""
    settings = {"dataset_id": None, "configuration": "2d", "trainer": "nnUNetTrainer", "num_processes": 2}
    root = None
    if workflow_defaults:
        settings, root, required = defaults("nnunet"), NNUNET_ROOT, False
    parser.add_argument("--root", type=Path, required=required, default=root,
                        help="folder holding nnUNet_raw/_preprocessed/_results")
    parser.add_argument("--dataset-id", type=int, required=required, default=settings["dataset_id"])
    parser.add_argument("--configuration", default=settings["configuration"])
    parser.add_argument("--trainer", default=settings["trainer"])
    if device:
        parser.add_argument("--device", default="auto")
    parser.add_argument("--num-processes", type=int, default=settings["num_processes"])


def _add_contrast_case_options(
    parser: argparse.ArgumentParser, case_files: tuple[str, ...], by_anatomy: bool = False,
) -> None:
    """--case SUBJECT CONTRAST FILES... (repeated), a long CSV and its Markdown summary (by_anatomy:
    and --anatomy)."""
    parser.add_argument("--case", nargs=2 + len(case_files), action="append", required=True,
                        metavar=("SUBJECT", "CONTRAST", *case_files))
    parser.add_argument("--out", type=Path, required=True, help="long CSV")
    parser.add_argument("--markdown", type=Path, required=True, help="summary table")
    if by_anatomy:
        _add_anatomy_option(parser)


def _add_anatomy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--anatomy", nargs="+", metavar="SUBJECT=ANATOMY",
                        help="every test subject's anatomy, where the cohort has a held-out one: rows split by anatomy")


def _anatomies(args: argparse.Namespace) -> dict[str, str] | None:
    return _pairs(args.anatomy, "anatomy", str) if args.anatomy else None


def _add_prediction_options(parser: argparse.ArgumentParser, mirroring: bool = True) -> None:
    parser.add_argument("--mirroring", action=argparse.BooleanOptionalAction, default=mirroring,
                        help="test-time mirroring: 4x the forward passes in 2d for a slightly higher Dice")


ARGUMENT_TYPES = {"integer": int, "number": float, "string": str}


def _add_section_options(parser: argparse.ArgumentParser, section: str) -> None:
    """One --key option per key of a config section, with the schema's default, choices and description."""
    for key, spec in schema()["properties"][section]["properties"].items():
        flag, text = "--" + key.replace("_", "-"), spec.get("description")
        if spec["type"] == "boolean":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=spec["default"], help=text)
        else:
            parser.add_argument(flag, type=ARGUMENT_TYPES[spec["type"]], choices=spec.get("enum"),
                                default=spec["default"], help=text)


class _Commands:
    """Adds subcommands and lists them in two groups in `midiffusion --help`."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser
        self.sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
        self.listed: dict[bool, list[str]] = {True: [], False: []}

    def add(self, name: str, help: str, func, *, user: bool) -> argparse.ArgumentParser:
        """user: a command you run by hand (else a step the workflow's rules run)."""
        self.listed[user].append(f"  {name:<22}{help}")
        command = self.sub.add_parser(name, description=help[0].upper() + help[1:] + ".")
        command.set_defaults(func=func)
        return command

    def describe(self) -> str:
        return "\n".join([
            "midiffusion: zero-shot cross-modality MRI translation with mutual-information-guided diffusion.", "",
            "Run the whole pipeline with Snakemake (see README.md); or run one command:", "",
            "commands for you:", *self.listed[True], "",
            "workflow steps (the rules run these; usable by hand too):", *self.listed[False], "",
            "`midiffusion <command> --help` shows a command's options.",
        ])


def cmd_phantom(args: argparse.Namespace) -> None:
    from .phantom import build_subject

    build_subject(
        args.root, args.subject, voxel_mm=args.voxel_mm, target=args.target, sources=args.sources,
        seed=args.seed, with_head=not args.no_head, qc_dir=args.qc_dir, anatomy_maps=args.anatomy_maps,
    )


def _add_phantom(commands: _Commands) -> None:
    parser = commands.add("phantom", "build one phantom subject (T1w/T2w/PDw/FLAIR/DIR, labels, misalignment, QC figure)",
                          cmd_phantom, user=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--voxel-mm", type=int, default=default("phantom", "voxel_mm"))
    parser.add_argument("--target", default=default("data", "target"))
    parser.add_argument("--sources", nargs="+", default=list(default("data", "sources")))
    parser.add_argument("--seed", type=int, default=default("phantom", "seed"))
    parser.add_argument("--no-head", action="store_true")
    parser.add_argument("--qc-dir", type=Path)
    parser.add_argument("--anatomy-maps", type=Path, help="a held-out anatomy's tissue maps (midiffusion anatomy) "
                        "instead of the ICBM152 2009a template")


def cmd_anatomy(args: argparse.Namespace) -> None:
    from .anatomy import write_tissue_maps

    print(write_tissue_maps(args.name, args.voxel_mm, args.out))


def _add_anatomy(commands: _Commands) -> None:
    parser = commands.add("anatomy", "tissue maps of a held-out anatomy for the phantom's test subjects (Colin27)",
                          cmd_anatomy, user=True)
    parser.add_argument("--name", default=default("phantom", "held_out_anatomy"))
    parser.add_argument("--voxel-mm", type=int, default=default("phantom", "voxel_mm"))
    parser.add_argument("--out", type=Path, required=True)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from .preprocess import SubjectImages, preprocess_subject

    from .config import PreprocessConfig

    PreprocessConfig(not args.no_n4, args.registration, args.brain_extraction, tuple(args.percentiles))  # checks them
    inputs = SubjectImages(args.subject, args.target, _pairs(args.image, "image"), args.labels, args.misalignment)
    errors = preprocess_subject(
        inputs, args.out_dir, registration=args.registration, brain_extraction=args.brain_extraction,
        use_n4=not args.no_n4, percentiles=tuple(args.percentiles),
    )
    for key, value in errors.items():
        print(f"{args.subject} {key}: {value:.3f}")


def _add_preprocess(commands: _Commands) -> None:
    parser = commands.add("preprocess", "N4, brain extraction, registration to the target, normalisation",
                          cmd_preprocess, user=False)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--image", action="append", required=True, metavar="CONTRAST=PATH")
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--misalignment", type=Path, help="phantom: JSON with the true misalignment")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--brain-extraction", default=default("preprocess", "brain_extraction"),
                        choices=["template", "labels"])
    _add_source_options(parser)


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    """What preprocess and register share: how a source reaches the target."""
    parser.add_argument("--registration", default=default("preprocess", "registration"), choices=["Rigid", "Affine"])
    parser.add_argument("--no-n4", action="store_true")
    parser.add_argument("--percentiles", type=float, nargs=2, default=list(default("preprocess", "percentiles")))


def cmd_register(args: argparse.Namespace) -> None:
    from .preprocess import register_source

    from .config import PreprocessConfig

    PreprocessConfig(n4=not args.no_n4, registration=args.registration, percentiles=tuple(args.percentiles))
    (contrast, image), = _pairs([args.source], "source").items()
    errors = register_source(args.subject, contrast, image, args.target_dir, args.target,
                             registration=args.registration, use_n4=not args.no_n4,
                             percentiles=tuple(args.percentiles), misalignment=args.misalignment)
    for key, value in errors.items():
        print(f"{args.subject} {key}: {value:.3f}")


def _add_register(commands: _Commands) -> None:
    parser = commands.add("register", "N4, registration of one source contrast to its preprocessed target, "
                          "normalisation", cmd_register, user=False)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", required=True, metavar="CONTRAST=PATH")
    parser.add_argument("--target-dir", type=Path, required=True,
                        help="the subject's preprocessed folder (preprocess --out-dir): its outputs go there too")
    parser.add_argument("--misalignment", type=Path, help="phantom: JSON with the true misalignment")
    _add_source_options(parser)


def cmd_qc_tables(args: argparse.Namespace) -> None:
    from .tables import qc_tables

    qc_tables(args.inputs, args.registration, args.atropos)


def _add_qc_tables(commands: _Commands) -> None:
    parser = commands.add("qc-tables", "registration error and Atropos Dice tables from the preprocessing QC",
                          cmd_qc_tables, user=False)
    parser.add_argument("--inputs", type=Path, nargs="+", required=True)
    parser.add_argument("--registration", type=Path, required=True)
    parser.add_argument("--atropos", type=Path, required=True)


def cmd_slices(args: argparse.Namespace) -> None:
    from .diffusion.slices import build_training_slices

    n = build_training_slices(args.images, args.masks, args.size, args.out)
    print(f"{n} slices of {args.size} x {args.size} -> {args.out}")


def _add_slices(commands: _Commands) -> None:
    parser = commands.add("slices", "stack the training subjects' target slices for the diffusion model", cmd_slices,
                          user=False)
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("--masks", type=Path, nargs="+", required=True)
    parser.add_argument("--size", type=int, default=default("slices", "size"))
    parser.add_argument("--out", type=Path, required=True)


def cmd_train(args: argparse.Namespace) -> None:
    from .config import DiffusionConfig
    from .diffusion.train import train

    config = DiffusionConfig.from_dict({"image_size": args.image_size, **_options(args.options)})
    result = train(args.slices, args.out_dir, config)
    print(result)


def _add_train(commands: _Commands) -> None:
    parser = commands.add("train", "train the diffusion model on target-contrast slices (resumes)", cmd_train,
                          user=True)
    parser.add_argument("--slices", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=default("slices", "size"))
    parser.add_argument("--options", default="{}", help="JSON object of training settings (config section diffusion)")


def cmd_translate(args: argparse.Namespace) -> None:
    from .config import SamplingConfig
    from .diffusion.translate import translate_volume

    config = SamplingConfig.from_dict(_options(args.options))
    translate_volume(
        args.model, args.mask, args.out, source_path=args.source, start_path=args.start,
        guided=PRODUCERS[args.method].guided, config=config, std_path=args.std, device=args.device,
    )


def _add_translate(commands: _Commands) -> None:
    parser = commands.add("translate", "translate a normalised source volume into the target contrast", cmd_translate,
                          user=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", type=Path, help="normalised source volume (not needed by unguided)")
    parser.add_argument("--start", type=Path, help="SDEdit start volume on the mask's grid: the sampling.start "
                        "baseline's image of the same case")
    parser.add_argument("--mask", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--std", type=Path, help="also write the voxelwise sd over samples")
    parser.add_argument("--method", default="midiffusion", choices=producers("diffusion"))
    parser.add_argument("--options", default="{}", help="JSON object of sampling settings (config section sampling)")
    parser.add_argument("--device", default="auto")


def cmd_translate_scan(args: argparse.Namespace) -> None:
    from .config import SamplingConfig
    from .scan import translate_scan

    config = SamplingConfig.from_dict({key: getattr(args, key) for key in defaults("sampling")})
    out = translate_scan(
        args.model, args.source, args.out, std_path=args.std, contrast=args.contrast,
        target_contrast=args.target_contrast, config=config,
        voxel_mm=args.voxel_mm, use_n4=not args.no_n4, percentiles=tuple(args.percentiles), device=args.device,
    )
    print(out if args.std is None else f"{out}, {args.std}")


def _add_translate_scan(commands: _Commands) -> None:
    parser = commands.add("translate-scan", "translate one raw scan: N4, brain extraction, normalisation, diffusion",
                          cmd_translate_scan, user=True)
    parser.add_argument("--model", type=Path, required=True, help="a trained model, e.g. results/diffusion/model.pt")
    parser.add_argument("--source", type=Path, required=True, help="the raw source-contrast scan (NIfTI)")
    parser.add_argument("--out", type=Path, required=True, help="the translation, on the source's grid")
    parser.add_argument("--std", type=Path, help="also write the voxelwise sd over samples (needs --n-samples > 1)")
    parser.add_argument("--contrast", help="the source's contrast, a BIDS suffix (default: the file name's, e.g. "
                        "_FLAIR.nii.gz); brain extraction registers the head model's image of it, or for a contrast "
                        "it does not render, its T1w image by mutual information")
    parser.add_argument("--target-contrast", default=default("data", "target"),
                        help="the model's target contrast: the head model's image of it is the atlas starts' template")
    parser.add_argument("--voxel-mm", type=float, default=default("phantom", "voxel_mm"),
                        help="voxel size the model was trained at (the default run's phantoms: phantom.voxel_mm)")
    parser.add_argument("--no-n4", action="store_true")
    parser.add_argument("--percentiles", type=float, nargs=2, default=list(default("preprocess", "percentiles")))
    parser.add_argument("--device", default="auto")
    _add_section_options(parser.add_argument_group("sampling (config section sampling)"), "sampling")


def cmd_segment_scan(args: argparse.Namespace) -> None:
    from .scan import segment_scan

    print(segment_scan(args.image, args.out, _nnunet_dirs(args), args.dataset_id, configuration=args.configuration,
                       trainer=args.trainer, device=args.device, num_processes=args.num_processes,
                       mirroring=args.mirroring))


def _add_segment_scan(commands: _Commands) -> None:
    parser = commands.add("segment-scan", "segment one image (e.g. translate-scan's) with the trained nnU-Net",
                          cmd_segment_scan, user=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the labels (0..3), on the image's grid")
    _add_nnunet_common(parser, workflow_defaults=True)
    _add_prediction_options(parser, mirroring=default("nnunet", "mirroring"))


def cmd_benchmark_sampling(args: argparse.Namespace) -> None:
    from .diffusion.benchmark import benchmark_sampling
    from .config import SamplingConfig

    segmenter = _segmenter(args) if args.root else None
    if (segmenter is None) != (args.labels is None):
        raise InputError("benchmark-sampling: Dice needs both --labels and the nnU-Net model (--root, --dataset-id)")
    benchmark_sampling(args.model, args.source, args.target, args.mask, args.out,
                       ddim_steps=args.ddim_steps, n_slices=args.n_slices,
                       config=SamplingConfig.from_dict(_options(args.options)), device=args.device,
                       labels_path=args.labels, segmenter=segmenter, start_path=args.start)


def _add_benchmark_sampling(commands: _Commands) -> None:
    parser = commands.add("benchmark-sampling", "DDPM (all steps) against DDIM step counts on test slices",
                          cmd_benchmark_sampling, user=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--mask", type=Path, required=True)
    parser.add_argument("--start", type=Path, help="the SDEdit start volume (sampling.start's image of the case); "
                        "without it every setting samples from pure noise")
    parser.add_argument("--ddim-steps", type=int, nargs="+", default=list(default("benchmark", "ddim_steps")))
    parser.add_argument("--n-slices", type=int, default=default("benchmark", "n_slices"))
    parser.add_argument("--options", default="{}",
                        help="JSON object of sampling settings (eta, guidance_scale, seed...)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", type=Path, help="ground-truth labels: with the nnU-Net options, adds Dice columns")
    _add_nnunet_common(parser, required=False, device=False)
    _add_prediction_options(parser)


def cmd_baseline(args: argparse.Namespace) -> None:
    from .baselines import run_baseline

    run_baseline(args.method, args.source, args.target, args.mask, args.reference, args.reference_mask, args.out,
                 template=args.template, slice_size=args.slice_size, percentiles=tuple(args.percentiles))


def _add_baseline(commands: _Commands) -> None:
    parser = commands.add("baseline",
                          "an image without diffusion (" + ", ".join(producers("target") + producers("map")) + ")",
                          cmd_baseline, user=False)
    parser.add_argument("--method", required=True, choices=producers("target") + producers("map"))
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--mask", type=Path, required=True)
    parser.add_argument("--reference", type=Path, nargs="+", default=[])
    parser.add_argument("--reference-mask", type=Path, nargs="+", default=[])
    parser.add_argument("--template", type=Path,
                        help="atlas_map: the target-contrast template registered to the subject")
    parser.add_argument("--slice-size", type=int, default=default("slices", "size"),
                        help="grid_ceiling: the slice grid")
    parser.add_argument("--percentiles", type=float, nargs=2, default=list(default("preprocess", "percentiles")),
                        help="atlas_map: the template's intensity normalisation (config preprocess.percentiles)")
    parser.add_argument("--out", type=Path, required=True)


def _nnunet_dirs(args: argparse.Namespace):
    from .segment import NnunetDirs

    return NnunetDirs(args.root)


def cmd_nnunet_export(args: argparse.Namespace) -> None:
    from .segment import Case, export_training_set

    images, labels = _pairs(args.image, "image"), _pairs(args.label, "label")
    missing = sorted(set(images) ^ set(labels))
    if missing:
        raise InputError(f"nnunet-export: cases {missing} lack an image or a label")
    cases = [Case(case_id, images[case_id], labels[case_id]) for case_id in sorted(images)]
    print(export_training_set(cases, _nnunet_dirs(args), args.dataset_id, args.name))


def _add_nnunet_export(commands: _Commands) -> None:
    parser = commands.add("nnunet-export", "write the training set in nnU-Net's raw format", cmd_nnunet_export,
                          user=False)
    _add_nnunet_common(parser)
    parser.add_argument("--name", required=True)
    parser.add_argument("--image", action="append", required=True, metavar="CASE=PATH")
    parser.add_argument("--label", action="append", required=True, metavar="CASE=PATH")


def cmd_nnunet_plan(args: argparse.Namespace) -> None:
    from .segment import plan_and_preprocess

    print(plan_and_preprocess(_nnunet_dirs(args), args.dataset_id, args.configuration, args.num_processes))


def _add_nnunet_plan(commands: _Commands) -> None:
    parser = commands.add("nnunet-plan", "nnU-Net plan and preprocess (with its integrity check)", cmd_nnunet_plan,
                          user=False)
    _add_nnunet_common(parser)


def cmd_nnunet_train(args: argparse.Namespace) -> None:
    from .segment import train

    print(train(_nnunet_dirs(args), args.dataset_id, args.configuration, args.trainer,
                device=args.device, num_processes=args.num_processes, seed=args.seed))


def _add_nnunet_train(commands: _Commands) -> None:
    parser = commands.add("nnunet-train", "train nnU-Net on one contrast of the training subjects", cmd_nnunet_train,
                          user=False)
    _add_nnunet_common(parser)
    # here --num-processes counts augmentation workers: 0 (in-process) lets the seed repeat the training
    parser.set_defaults(num_processes=default("nnunet", "augmentation_processes"))
    parser.add_argument("--seed", type=int, default=default("nnunet", "seed"), help="seeds this project's trainers")


def cmd_nnunet_curve(args: argparse.Namespace) -> None:
    from .segment import training_curve

    print(training_curve(args.checkpoint, args.out))


def _add_nnunet_curve(commands: _Commands) -> None:
    parser = commands.add("nnunet-curve", "an nnU-Net checkpoint's per-epoch losses and validation pseudo Dice as CSV",
                          cmd_nnunet_curve, user=False)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)


def _segmenter(args: argparse.Namespace):
    """segment_volumes bound to the trained nnU-Net model the arguments name."""
    from .segment import segment_volumes

    return functools.partial(
        segment_volumes, _nnunet_dirs(args), args.dataset_id, configuration=args.configuration,
        trainer=args.trainer, device=args.device, num_processes=args.num_processes, mirroring=args.mirroring,
    )


def cmd_nnunet_predict(args: argparse.Namespace) -> None:
    outputs = _segmenter(args)([(Path(i), Path(o)) for i, o in args.case])
    print(f"{len(outputs)} segmentations written")


def _add_nnunet_predict(commands: _Commands) -> None:
    parser = commands.add("nnunet-predict", "segment volumes with a trained nnU-Net", cmd_nnunet_predict, user=True)
    _add_nnunet_common(parser)
    parser.add_argument("--case", nargs=2, action="append", required=True, metavar=("IMAGE", "SEGMENTATION"))
    _add_prediction_options(parser)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_cases

    evaluate_cases(args.method, [tuple(case) for case in args.case], args.out)


def _add_evaluate(commands: _Commands) -> None:
    parser = commands.add("evaluate", "Dice and image metrics of one method's test cases", cmd_evaluate, user=False)
    parser.add_argument("--method", required=True)
    parser.add_argument("--case", nargs=7, action="append", required=True,
                        metavar=("SUBJECT", "SOURCE", "SEGMENTATION", "LABELS", "IMAGE", "REFERENCE", "MASK"))
    parser.add_argument("--out", type=Path, required=True)


def cmd_intensity_bound(args: argparse.Namespace) -> None:
    from .evaluate import intensity_bound_tables

    cases = [tuple(case) for case in args.case]
    print(intensity_bound_tables(cases, args.out, args.markdown, _anatomies(args)).to_string(index=False))


def _add_intensity_bound(commands: _Commands) -> None:
    parser = commands.add("intensity-bound", "Dice of the best voxelwise intensity classifier per contrast",
                          cmd_intensity_bound, user=False)
    _add_contrast_case_options(parser, ("IMAGE", "LABELS", "MASK"), by_anatomy=True)


def cmd_intensity_bound_corr(args: argparse.Namespace) -> None:
    from .evaluate import intensity_bound_corr_tables

    cases = [tuple(case) for case in args.case]
    print(intensity_bound_corr_tables(cases, args.metrics, args.out, args.markdown).to_string(index=False))


def _add_intensity_bound_corr(commands: _Commands) -> None:
    parser = commands.add("intensity-bound-corr",
                          "correlation of the best voxelwise intensity map with the real target",
                          cmd_intensity_bound_corr, user=False)
    parser.add_argument("--metrics", type=Path, required=True, help="the run's long metrics table")
    _add_contrast_case_options(parser, ("IMAGE", "REFERENCE", "MASK"))


def cmd_dice_table(args: argparse.Namespace) -> None:
    from .evaluate import segmentation_dice_tables

    cases = [tuple(case) for case in args.case]
    print(segmentation_dice_tables(cases, args.out, args.markdown, _anatomies(args)).to_string(index=False))


def _add_dice_table(commands: _Commands) -> None:
    parser = commands.add("dice-table", "Dice of segmentations against labels per contrast and class", cmd_dice_table,
                          user=True)
    _add_contrast_case_options(parser, ("SEGMENTATION", "LABELS"), by_anatomy=True)


def cmd_tables(args: argparse.Namespace) -> None:
    from .tables import write_tables_from_csv

    curves = _pairs(args.curves, "curves", Path) if args.curves else None
    for path in write_tables_from_csv(args.metrics, args.out_dir, _anatomies(args), curves).values():
        print(path)


def _add_tables(commands: _Commands) -> None:
    parser = commands.add("tables", "long and summary tables (CSV, Markdown) from the per-method metrics", cmd_tables,
                          user=False)
    parser.add_argument("--metrics", type=Path, nargs="+", required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    _add_anatomy_option(parser)
    parser.add_argument("--curves", nargs="+", metavar="SEGMENTER=CSV",
                        help="each segmenter's nnU-Net training curve (nnunet-curve): marks rivals not levelled off")


def cmd_figure(args: argparse.Namespace) -> None:
    from .figures import make_figure

    make_figure(args.kind, args.inputs, args.out, subject=args.subject)


def _add_figure(commands: _Commands) -> None:
    parser = commands.add("figure", "a figure: dice | grid | sampler", cmd_figure, user=False)
    parser.add_argument("kind", choices=["dice", "grid", "sampler"])
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--subject")
    parser.add_argument("--out", type=Path, required=True)


def cmd_real_contrast(args: argparse.Namespace) -> None:
    from .config import SamplingConfig
    from .real_contrast import run_real_contrast

    table = run_real_contrast(
        args.model, _nnunet_dirs(args), args.dataset_id, args.reference, args.reference_mask, args.out_dir, args.table,
        args.markdown, args.figure, methods=args.methods, target=args.target, trainer=args.trainer,
        sampling=SamplingConfig.from_dict(_options(args.options)), voxel_mm=args.voxel_mm, use_n4=not args.no_n4,
        percentiles=tuple(args.percentiles), slice_size=args.slice_size, device=args.device,
        configuration=args.configuration, num_processes=args.num_processes, mirroring=args.mirroring,
    )
    print(table.to_string(index=False))


def _add_real_contrast(commands: _Commands) -> None:
    parser = commands.add("real-contrast", "the real ICBM152 2009c T2w template through every method, against its T1w",
                          cmd_real_contrast, user=False)
    parser.add_argument("--model", type=Path, required=True, help="the trained diffusion model")
    _add_nnunet_common(parser, workflow_defaults=True)
    _add_prediction_options(parser, mirroring=default("nnunet", "mirroring"))
    parser.add_argument("--reference", type=Path, nargs="+", required=True,
                        help="the training subjects' normalised targets")
    parser.add_argument("--reference-mask", type=Path, nargs="+", required=True, help="their brain masks")
    parser.add_argument("--methods", nargs="+", choices=METHOD_ORDER, default=list(METHOD_ORDER))
    parser.add_argument("--target", default=default("data", "target"), help="the models' target contrast (T1w or T2w)")
    parser.add_argument("--options", default="{}", help="JSON object of sampling settings (config section sampling)")
    parser.add_argument("--voxel-mm", type=float, default=default("phantom", "voxel_mm"),
                        help="voxel size the models were trained at (phantom.voxel_mm)")
    parser.add_argument("--no-n4", action="store_true")
    parser.add_argument("--percentiles", type=float, nargs=2, default=list(default("preprocess", "percentiles")))
    parser.add_argument("--slice-size", type=int, default=default("slices", "size"),
                        help="grid_ceiling: the slice grid")
    parser.add_argument("--out-dir", type=Path, required=True, help="the case, method images and segmentations")
    parser.add_argument("--table", type=Path, required=True, help="CSV, one row per method")
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--figure", type=Path, help="mid axial slice of every method's image and segmentation")


# The commands in the order `midiffusion --help` lists them (within each group).
COMMANDS = (
    _add_phantom,
    _add_anatomy,
    _add_train,
    _add_translate,
    _add_translate_scan,
    _add_segment_scan,
    _add_nnunet_predict,
    _add_benchmark_sampling,
    _add_dice_table,
    _add_preprocess,
    _add_register,
    _add_qc_tables,
    _add_slices,
    _add_baseline,
    _add_real_contrast,
    _add_nnunet_export,
    _add_nnunet_plan,
    _add_nnunet_train,
    _add_nnunet_curve,
    _add_evaluate,
    _add_intensity_bound,
    _add_intensity_bound_corr,
    _add_tables,
    _add_figure,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midiffusion", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks for errors")
    commands = _Commands(parser)
    for add in COMMANDS:
        add(commands)
    parser.description = commands.describe()
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        args.func(args)
    except InputError as error:
        if args.verbose:
            raise
        print(f"midiffusion {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
