"""The typed config sections, with their defaults read from the one schema (config.schema.yaml).

The schema holds every key's type, limits and default; Snakemake's validate() fills the workflow's
config from it, and the dataclasses here take their field defaults from it, so the Python API, the
CLI and the workflow cannot disagree. `check_config` builds every typed section when the workflow
starts: a bad value fails in seconds with the key's name, not hours later in its rule. Nothing here
imports torch (`snakemake -n` stays fast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar

import yaml

from .io import InputError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
T = TypeVar("T")


@cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def default(section: str, key: str | None = None) -> Any:
    """The schema's default of `section.key` (or of a top-level key when `key` is None)."""
    properties = schema()["properties"][section]
    value = properties["properties"][key]["default"] if key else properties["default"]
    return tuple(value) if isinstance(value, list) else value


def defaults(section: str) -> dict[str, Any]:
    """Every default of a section, as plain values."""
    return {key: spec["default"] for key, spec in schema()["properties"][section]["properties"].items()}


Switch = bool | Literal["auto"]  # a setting that is on, off, or decided by the machine


def _field(section: str, key: str) -> Any:
    """A dataclass field whose default is the schema's."""
    return field(default=default(section, key))


def _convert(section: str, name: str, kind: str, value: Any) -> Any:
    """Check / convert one value to its field's type (annotations are strings under `from __future__`)."""
    try:
        if kind == "tuple[int, ...]":
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_convert(section, name, "int", item) for item in value)
        if kind == "int":
            if isinstance(value, bool) or int(value) != value:
                raise TypeError
            return int(value)
        if kind == "float":
            # float() also takes "3e-4", which YAML 1.1 loaders return as a string.
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind == "Switch":
            if not (isinstance(value, bool) or value == "auto"):
                raise TypeError
            return value
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        expected = "true, false or auto" if kind == "Switch" else f"of type {kind}"
        raise InputError(f"{section} config: {name} = {value!r} is not {expected}") from None


def from_dict(cls: type[T], values: Mapping[str, Any], section: str) -> T:
    """Build dataclass `cls` from a dict: unknown keys and values of the wrong type raise InputError."""
    known = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"{section} config: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kinds = {name: "str" if kind.startswith("Literal") else kind for name, kind in known.items()}
    return cls(**{name: _convert(section, name, kinds[name], value) for name, value in values.items()})


def unet_feature_map_sizes(
    image_size: int, channel_mults: Sequence[int], attention_resolutions: Sequence[int]
) -> list[int]:
    """The UNet's feature-map sizes, one per level of channel_mults (each halves the slice). InputError,
    naming the config key, when image_size does not halve that often or an attention resolution is
    not one of them: the config checks it at workflow start, the UNet when built from Python."""
    levels = len(channel_mults)
    sizes = [image_size // 2**i for i in range(levels)]
    _require("diffusion", {
        f"image_size (slices.size) divisible by 2**{levels - 1} for {levels} UNet levels":
            image_size % 2 ** (levels - 1) == 0,
        f"attention_resolutions among the feature-map sizes {sizes} of slices.size {image_size}":
            set(attention_resolutions) <= set(sizes),
    }, {"image_size": image_size, "attention_resolutions": tuple(attention_resolutions)})
    return sizes


def _require(section: str, checks: Mapping[str, bool], got: Mapping[str, Any]) -> None:
    """Raise InputError for the first failed check, naming the key and its value."""
    for rule, ok in checks.items():
        if not ok:
            name = rule.split()[0]
            raise InputError(f"{section}.{name}: expected {rule}, got {got[name]!r}")


def _choices(section: str, key: str) -> tuple[str, ...]:
    return tuple(schema()["properties"][section]["properties"][key]["enum"])


@dataclass(frozen=True)
class DiffusionConfig:
    """Config section `diffusion`: the UNet, the DDPM schedule, training and the LMI condition
    (docs/method.md, "Training"). image_size comes from section `slices`."""

    image_size: int = _field("slices", "size")
    base_channels: int = _field("diffusion", "base_channels")
    channel_mults: tuple[int, ...] = _field("diffusion", "channel_mults")
    attention_resolutions: tuple[int, ...] = _field("diffusion", "attention_resolutions")
    num_res_blocks: int = _field("diffusion", "num_res_blocks")
    dropout: float = _field("diffusion", "dropout")
    timesteps: int = _field("diffusion", "timesteps")
    beta_start: float = _field("diffusion", "beta_start")
    beta_end: float = _field("diffusion", "beta_end")
    lr: float = _field("diffusion", "lr")
    batch_size: int = _field("diffusion", "batch_size")
    steps: int = _field("diffusion", "steps")
    ema_decay: float = _field("diffusion", "ema_decay")
    ema_warmup: bool = _field("diffusion", "ema_warmup")
    grad_clip: float = _field("diffusion", "grad_clip")
    min_snr_gamma: float = _field("diffusion", "min_snr_gamma")
    cond_dropout: float = _field("diffusion", "cond_dropout")
    anchor_contrast_p: float = _field("diffusion", "anchor_contrast_p")
    anchor_contrast_knots: int = _field("diffusion", "anchor_contrast_knots")
    pairing: Literal["x_t", "x_t_plus_1"] = _field("diffusion", "pairing")
    random_flip: bool = _field("diffusion", "random_flip")
    lmi_patch: int = _field("diffusion", "lmi_patch")
    lmi_window: int = _field("diffusion", "lmi_window")
    lmi_bins: int = _field("diffusion", "lmi_bins")
    lmi_sigma: float = _field("diffusion", "lmi_sigma")
    checkpoint_every: int = _field("diffusion", "checkpoint_every")
    seed: int = _field("diffusion", "seed")
    device: str = _field("diffusion", "device")
    mixed_precision: bool = _field("diffusion", "mixed_precision")
    cpu_bfloat16: Switch = _field("diffusion", "cpu_bfloat16")

    def __post_init__(self) -> None:
        positive = ("image_size", "base_channels", "num_res_blocks", "timesteps", "batch_size", "steps",
                    "checkpoint_every", "lr", "grad_clip", "lmi_patch", "lmi_window", "lmi_sigma")
        checks = {f"{name} > 0": getattr(self, name) > 0 for name in positive}
        checks |= {f"{name} in [0, 1)": 0 <= getattr(self, name) < 1 for name in ("dropout", "cond_dropout", "ema_decay")}
        checks |= {
            "anchor_contrast_p in [0, 1]": 0 <= self.anchor_contrast_p <= 1,
            "anchor_contrast_knots >= 2": self.anchor_contrast_knots >= 2,
            "lmi_bins >= 2": self.lmi_bins >= 2,
            "beta_end >= beta_start, both in (0, 1)": 0 < self.beta_start <= self.beta_end < 1,
            f"pairing in {_choices('diffusion', 'pairing')}": self.pairing in _choices("diffusion", "pairing"),
        }
        _require("diffusion", checks, asdict(self))
        # checked here, before any job, and not only when the UNet is built after preprocessing
        unet_feature_map_sizes(self.image_size, self.channel_mults, self.attention_resolutions)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DiffusionConfig:
        """Build from a plain (YAML / JSON) dict: unknown keys and values of the wrong type raise InputError."""
        return from_dict(cls, values, "diffusion")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lmi_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of lmi.local_mutual_information; sampling uses the model file's."""
        return {"patch": self.lmi_patch, "window": self.lmi_window, "bins": self.lmi_bins, "sigma": self.lmi_sigma}


@dataclass(frozen=True)
class SamplingConfig:
    """Config section `sampling`: how translations are sampled (docs/method.md, "Sampling")."""

    sampler: Literal["ddpm", "ddim"] = _field("sampling", "sampler")
    steps: int = _field("sampling", "steps")
    eta: float = _field("sampling", "eta")
    n_samples: int = _field("sampling", "n_samples")
    guidance_scale: float = _field("sampling", "guidance_scale")
    ddpm_variance: Literal["posterior", "beta"] = _field("sampling", "ddpm_variance")
    clip_x0: bool = _field("sampling", "clip_x0")
    batch_size: int = _field("sampling", "batch_size")
    seed: int = _field("sampling", "seed")
    start: Literal["noise", "atlas_map", "atlas_match", "invert"] = _field("sampling", "start")
    start_t0: float = _field("sampling", "start_t0")
    lmi_gradient_scale: float = _field("sampling", "lmi_gradient_scale")
    detail_radius: int = _field("sampling", "detail_radius")
    detail_eps: float = _field("sampling", "detail_eps")

    def __post_init__(self) -> None:
        checks = {
            f"sampler in {_choices('sampling', 'sampler')}": self.sampler in _choices("sampling", "sampler"),
            "steps >= 1": self.steps >= 1,
            "eta >= 0": self.eta >= 0,
            "n_samples >= 1": self.n_samples >= 1,
            "batch_size >= 1": self.batch_size >= 1,
            f"ddpm_variance in {_choices('sampling', 'ddpm_variance')}": self.ddpm_variance
            in _choices("sampling", "ddpm_variance"),
            f"start in {_choices('sampling', 'start')}": self.start in _choices("sampling", "start"),
            "start_t0 in [0, 1]": 0 <= self.start_t0 <= 1,
            "lmi_gradient_scale >= 0": self.lmi_gradient_scale >= 0,
            "detail_radius >= 0": self.detail_radius >= 0,
            "detail_eps > 0": self.detail_eps > 0,
        }
        _require("sampling", checks, asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SamplingConfig:
        return from_dict(cls, values, "sampling")


@dataclass(frozen=True)
class PreprocessConfig:
    """Config section `preprocess` (docs/method.md, "Preprocessing")."""

    n4: bool = _field("preprocess", "n4")
    registration: Literal["Rigid", "Affine"] = _field("preprocess", "registration")
    brain_extraction: Literal["template", "labels"] = _field("preprocess", "brain_extraction")
    percentiles: tuple[float, float] = _field("preprocess", "percentiles")

    def __post_init__(self) -> None:
        low, high = self.percentiles
        _require("preprocess", {"percentiles [low, high] with 0 <= low < high <= 100": 0 <= low < high <= 100},
                 {"percentiles": list(self.percentiles)})


NEEDS_TEMPLATE = ("atlas_map", "atlas_match")  # the producers that read the registered template


def check_renderable(layout: str, target: str, sources: list[str], brain_extraction: str) -> None:
    """The head model (head.PROTOCOLS) renders the phantom's contrasts and the reference head that template
    brain extraction registers to the target image: any other contrast needs real data, and labels."""
    from .head import PROTOCOLS

    known = sorted(PROTOCOLS)
    if layout == "phantom":
        unknown = [c for c in [target, *sources] if c not in PROTOCOLS]
        if unknown:
            raise InputError(f"data: the phantom renders only {known}, not {unknown}")
    if brain_extraction == "template" and target not in PROTOCOLS:
        raise InputError(f"preprocess.brain_extraction: template needs a reference head of the target contrast "
                         f"{target!r} (known: {known}); give labels (data.labels) and set brain_extraction: labels")


def check_config(config: Mapping[str, Any], subjects: list[str] | None = None) -> None:
    """Build every typed section of a validated workflow config (InputError naming the key on a bad
    value) and check the cross-section facts: sources exclude the target, the supervised bound's sources
    are among them, methods are registered, data.subjects are all among `subjects` (the ids found)."""
    from .methods import METHODS, check_methods, trainer_name

    DiffusionConfig.from_dict({**config["diffusion"], "image_size": config["slices"]["size"]})
    SamplingConfig.from_dict(config["sampling"])
    PreprocessConfig(**{**config["preprocess"], "percentiles": tuple(config["preprocess"]["percentiles"])})
    data = config["data"]
    if data["target"] in data["sources"]:
        raise InputError(f"data.sources: {data['sources']} must not contain the target contrast {data['target']}")
    check_renderable(data["layout"], data["target"], data["sources"], config["preprocess"]["brain_extraction"])
    bound_sources = config["supervised_bound"]["sources"] or []
    if not set(bound_sources) <= set(data["sources"]):
        raise InputError(f"supervised_bound.sources: {bound_sources} must be among data.sources {data['sources']}")
    check_methods(config["methods"])
    for method in config["methods"]:  # every rival's trainer takes the target's schedule or rival_schedule
        trainer_name(METHODS[method].segmenter, config["nnunet"]["trainer"], config["nnunet"]["rival_schedule"])
    needing = [name for name in [*config["methods"], config["sampling"]["start"]] if name in NEEDS_TEMPLATE]
    if needing and config["preprocess"]["brain_extraction"] != "template":
        raise InputError(f"methods, sampling.start: {sorted(set(needing))} need the template registered by "
                         "preprocess.brain_extraction: template")
    if config["diffusion"]["cond_dropout"] == 0:  # the model never saw a dropped condition
        if "unguided" in config["methods"] or config["sampling"]["guidance_scale"] != 1:
            raise InputError("diffusion.cond_dropout: 0 trains no unconditional mode, which `unguided` in methods "
                             "and sampling.guidance_scale != 1 need; set cond_dropout > 0 (e.g. 0.1) or drop them")
    if subjects is not None and data["subjects"]:
        missing = sorted(set(data["subjects"]) - set(subjects))
        if missing:
            raise InputError(f"data.subjects: {missing} not found in {data['root']} (found {sorted(subjects)})")
