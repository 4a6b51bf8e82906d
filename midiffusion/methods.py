"""The method registry: what each compared method is, in display order. No heavy imports, so the
workflow reads it while Snakemake parses the DAG.

A method is an image producer x a segmenter (docs/method.md, "Protocol"):
- a producer makes the image a segmenter reads: the real target ("target"), an intensity map of the
  source in baselines.py ("map"; `none` is the source as it is), or the diffusion model ("diffusion",
  `guided` by LMI or not). A producer whose image does not depend on the source contrast
  (`uses_source` False) makes it once per subject, not once per source.
- a segmenter is an nnU-Net trained on the training subjects' target-contrast labels: "target" (the
  standard recipe, on the target images), or a contrast-agnostic rival, "strong_aug" (nnU-Net's
  nnUNetTrainerDA5) or "domain_rand" (SynthSeg-style images synthesised from the label maps). All
  three share the target trainer's schedule (`trainer_name` derives the rivals' trainer from it),
  unless the rivals are given one of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .io import InputError


@dataclass(frozen=True)
class Producer:
    name: str
    kind: Literal["target", "map", "diffusion"]
    description: str
    guided: bool = False
    needs: str = ""  # what a user must have beyond the source images, for the verdict table

    @property
    def uses_source(self) -> bool:
        return self.kind == "map" or (self.kind == "diffusion" and self.guided)


@dataclass(frozen=True)
class Segmenter:
    name: str
    trainer_tag: str  # nnUNetTrainer<tag><schedule suffix>
    description: str
    needs: str


@dataclass(frozen=True)
class Method:
    name: str
    producer: str
    description: str
    segmenter: str = "target"
    in_grid: bool = True  # a column of the translation grid figure

    @property
    def uses_source(self) -> bool:
        return PRODUCERS[self.producer].uses_source

    @property
    def needs(self) -> str:
        """What a user must have for this road: the producer's needs, then the segmenter's."""
        return "; ".join(n for n in (PRODUCERS[self.producer].needs, SEGMENTERS[self.segmenter].needs) if n)


PRODUCERS: dict[str, Producer] = {p.name: p for p in (
    Producer("oracle", "target", "the real target image", needs="target images of the test subjects"),
    Producer("grid_ceiling", "target", "the real target through the diffusion model's slice grid and back",
             needs="target images of the test subjects"),
    Producer("midiffusion", "diffusion", "LMI-guided translation by the diffusion model", guided=True,
             needs="target images (diffusion model)"),
    Producer("unguided", "diffusion", "the diffusion model with the LMI condition dropped",
             needs="target images (diffusion model)"),
    Producer("atlas_map", "map", "a per-subject look-up table from source to template intensity",
             needs="a target-contrast template"),
    Producer("atlas_match", "map", "the atlas_map look-up's order with the training targets' histogram",
             needs="a target-contrast template; target images (intensity reference)"),
    Producer("invert", "map", "the source negated in the brain, histogram-matched to the training targets",
             needs="target images (intensity reference)"),
    Producer("histmatch", "map", "source brain intensities histogram-matched to the training targets",
             needs="target images (intensity reference)"),
    Producer("none", "map", "the source image as it is"),
)}

SEGMENTERS: dict[str, Segmenter] = {s.name: s for s in (
    Segmenter("target", "", "nnU-Net trained on the target images (the standard recipe)",
              needs="target images + labels (nnU-Net)"),
    Segmenter("strong_aug", "DA5", "nnU-Net with its strong augmentation (nnUNetTrainerDA5)",
              needs="target images + labels (nnU-Net)"),
    Segmenter("domain_rand", "DomainRand", "nnU-Net on images synthesised from the labels (SynthSeg-style)",
              needs="target labels only (nnU-Net)"),
)}

# Display order of tables and figures: the bounds, the method, the rivals, the ablation, the baselines.
REGISTRY: tuple[Method, ...] = (
    Method("oracle", "oracle", "the real target image (upper bound)", in_grid=False),
    Method("grid_ceiling", "grid_ceiling", "the real target through the slice grid (ceiling of translation)",
           in_grid=False),
    Method("midiffusion", "midiffusion", "LMI-guided translation, T1w nnU-Net"),
    Method("midiffusion+domain_rand", "midiffusion", "LMI-guided translation, domain-randomised nnU-Net",
           segmenter="domain_rand"),
    Method("domain_rand", "none", "the source segmented by the domain-randomised nnU-Net", segmenter="domain_rand"),
    Method("strong_aug", "none", "the source segmented by nnU-Net with strong augmentation", segmenter="strong_aug"),
    Method("unguided", "unguided", "the same model with the LMI condition dropped (ablation)"),
    Method("atlas_map", "atlas_map", "per-subject source-to-template intensity look-up table"),
    Method("atlas_match", "atlas_match", "the source ordered by the atlas look-up, histogram-matched"),
    Method("invert", "invert", "the negated source, histogram-matched"),
    Method("histmatch", "histmatch", "the source histogram-matched to the training target brains"),
    Method("none", "none", "the source image as it is (lower bound)"),
)
METHODS: dict[str, Method] = {method.name: method for method in REGISTRY}
METHOD_ORDER: tuple[str, ...] = tuple(METHODS)


def producers(kind: str | None = None) -> list[str]:
    """Registered producer names, optionally only those of one kind."""
    return [p.name for p in PRODUCERS.values() if kind is None or p.kind == kind]


def case_name(method: str, subject: str, source: str) -> str:
    """The file stem of a method's image and segmentation: sub-<id>_<source>, or sub-<id> where the
    image does not depend on the source contrast (made once per subject)."""
    return f"sub-{subject}_{source}" if METHODS[method].uses_source else f"sub-{subject}"


def trainer_name(segmenter: str, target_trainer: str, rival_schedule: str | None = None) -> str:
    """The nnU-Net trainer of a segmenter: the target's own, or a rival's nnUNetTrainer<tag><schedule>.
    The schedule is `rival_schedule` where given (a suffix such as _midiffusion_long), else the target
    trainer's (nnUNetTrainer_midiffusion_quick -> nnUNetTrainerDA5_midiffusion_quick)."""
    tag = SEGMENTERS[segmenter].trainer_tag
    if not tag:
        return target_trainer
    if rival_schedule is None:
        match = re.fullmatch(r"nnUNetTrainer(_.+)?", target_trainer)
        if not match:
            raise InputError(
                f"nnunet.trainer: {target_trainer!r} is not nnUNetTrainer or nnUNetTrainer_<schedule>, so the "
                f"{segmenter} rival's trainer (nnUNetTrainer{tag}<schedule>) cannot be given the same budget; "
                "or give the rivals a schedule of their own (nnunet.rival_schedule)"
            )
        rival_schedule = match[1] or ""
    return f"nnUNetTrainer{tag}{rival_schedule}"


def check_methods(requested: list[str]) -> None:
    unknown = sorted(set(requested) - set(METHODS))
    if unknown:
        raise InputError(f"methods: unknown {unknown}; known are {list(METHODS)}")
