"""The method registry: what each compared method is, in display order. No heavy imports, so the
workflow reads it while Snakemake parses the DAG.

A method is an image producer x a segmenter: `image` says what makes the image the segmenter reads
("target": the real target image, the oracle; "map": an intensity map of the source in baselines.py;
"diffusion": a translation by the diffusion model, `guided` by LMI or not), `segmenter` which nnU-Net
reads it ("target": the one trained on the target contrast). A method whose image does not depend
on the source contrast (`uses_source` False) is made once per subject, not once per source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .io import InputError


@dataclass(frozen=True)
class Method:
    name: str
    image: Literal["target", "map", "diffusion"]
    description: str
    guided: bool = False
    segmenter: Literal["target"] = "target"
    in_grid: bool = True  # a column of the translation grid figure

    @property
    def uses_source(self) -> bool:
        return self.image == "map" or (self.image == "diffusion" and self.guided)


# Display order of tables and figures: the bound first, then the method, its ablation, the baselines.
REGISTRY: tuple[Method, ...] = (
    Method("oracle", "target", "the real target image (upper bound)", in_grid=False),
    Method("midiffusion", "diffusion", "LMI-guided translation by the diffusion model", guided=True),
    Method("unguided", "diffusion", "the same model with the LMI condition dropped (ablation)"),
    Method("histmatch", "map", "source brain intensities histogram-matched to the training target brains"),
    Method("none", "map", "the source image as it is (lower bound)"),
)
METHODS: dict[str, Method] = {method.name: method for method in REGISTRY}
METHOD_ORDER: tuple[str, ...] = tuple(METHODS)


def names(image: str | None = None) -> list[str]:
    """Registered method names in display order, optionally only those whose image is of one kind."""
    return [m.name for m in REGISTRY if image is None or m.image == image]


def case_name(method: str, subject: str, source: str) -> str:
    """The file stem of a method's image and segmentation: sub-<id>_<source>, or sub-<id> where the
    image does not depend on the source contrast (made once per subject)."""
    return f"sub-{subject}_{source}" if METHODS[method].uses_source else f"sub-{subject}"


def check_methods(requested: list[str]) -> None:
    unknown = sorted(set(requested) - set(METHODS))
    if unknown:
        raise InputError(f"methods: unknown {unknown}; known are {list(METHODS)}")
