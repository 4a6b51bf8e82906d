"""The head model that the phantom and brain extraction share: tissues and their MR signal (spin echo,
inversion recovery for FLAIR, double inversion recovery for DIR), and the partial volumes of a brain (from
GM/WM maps) wrapped in a layered head shell (skull, diploe, muscle, fat, skin)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from .layout import TISSUE_LABELS

TISSUES = tuple(TISSUE_LABELS)  # CSF, GM, WM: label = index + 1


@dataclass(frozen=True)
class Protocol:
    """Repetition and echo times (ms), and the inversion pulses' times before the excitation (ms): none for
    a spin echo, one for inversion recovery (FLAIR), two for double inversion recovery (DIR)."""

    tr_ms: float
    te_ms: float
    inversions_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class Tissue:
    """Relaxation times (ms) and proton density (relative to water) of one tissue."""

    t1_ms: float
    t2_ms: float
    pd: float

    def signal(self, protocol: Protocol) -> float:
        """MR signal of the pure tissue (no texture, noise or bias)."""
        return float(mr_signal(self.pd, self.t1_ms, self.t2_ms, protocol))


# 1.5 T values (BrainWeb-like) for the brain; literature-ballpark values for the head.
BRAIN_TISSUES = {
    "CSF": Tissue(2569.0, 329.0, 1.0),
    "GM": Tissue(833.0, 83.0, 0.86),
    "WM": Tissue(500.0, 70.0, 0.77),
}
HEAD_TISSUES = {
    "fat": Tissue(260.0, 80.0, 0.9),  # bright in T1w
    "muscle": Tissue(870.0, 47.0, 0.8),
    "bone": Tissue(1000.0, 5.0, 0.05),  # cortical bone: few mobile protons, dark in every contrast
}
# Head shell from the brain surface outward: (thickness mm, tissue fractions). Inner table, diploe
# (fatty marrow), outer table, galea / muscle, subcutaneous fat, skin.
HEAD_LAYERS = (
    (2.0, {"bone": 1.0}),
    (2.5, {"bone": 0.5, "fat": 0.5}),
    (1.5, {"bone": 1.0}),
    (2.0, {"muscle": 1.0}),
    (4.0, {"fat": 1.0}),
    (1.5, {"muscle": 1.0}),
)


def longitudinal_magnetisation(t1_ms, tr_ms: float, inversions_ms: tuple[float, ...] = ()):
    """Mz at the excitation (units of M0) in the steady state where each readout leaves Mz = 0: recovery
    over TR, flipped by each inversion pulse on the way (TI ms before the excitation). None:
    1 - exp(-TR/T1); one: 1 - 2 exp(-TI/T1) + exp(-TR/T1); two (TI1 > TI2):
    1 - 2 exp(-TI2/T1) + 2 exp(-TI1/T1) - exp(-TR/T1). Floats or broadcastable arrays."""
    mz, since = 0.0, tr_ms  # since: ms before the excitation of the last event
    for ti in sorted(inversions_ms, reverse=True):
        mz = -(1.0 - (1.0 - mz) * np.exp(-(since - ti) / t1_ms))
        since = ti
    return 1.0 - (1.0 - mz) * np.exp(-since / t1_ms)


def null_inversion_time(t1_ms: float, tr_ms: float) -> float:
    """The inversion time that nulls a tissue of relaxation time T1: 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0."""
    return float(t1_ms * np.log(2.0 / (1.0 + np.exp(-tr_ms / t1_ms))))


def double_null_inversion_times(t1_long_ms: float, t1_short_ms: float, tr_ms: float) -> tuple[float, float]:
    """The two inversion times (TI1 > TI2) that null both a long-T1 tissue (CSF) and a short-T1 one (WM).
    For each TI1 the TI2 that nulls the short-T1 tissue is closed-form; TI1 is the root, found on a grid
    then refined, of the long-T1 tissue's longitudinal magnetisation."""

    def second(ti1: float) -> float:
        decay = np.exp(-np.array([ti1, tr_ms]) / t1_short_ms)
        return float(-t1_short_ms * np.log((1.0 + 2.0 * decay[0] - decay[1]) / 2.0))

    def long_tissue(ti1: float) -> float:
        return float(longitudinal_magnetisation(t1_long_ms, tr_ms, (ti1, second(ti1))))

    grid = np.linspace(1.0, tr_ms, 200)  # coarse: brentq refines the one crossing (run at import)
    values = np.array([long_tissue(ti1) for ti1 in grid])
    crossing = np.flatnonzero(np.diff(np.sign(values)))
    if crossing.size != 1:
        raise ValueError(f"T1 {t1_long_ms} and {t1_short_ms} ms at TR {tr_ms} ms: {crossing.size} double nulls, not one")
    ti1 = brentq(long_tissue, grid[crossing[0]], grid[crossing[0] + 1], xtol=1e-9)
    return float(ti1), second(ti1)


# TR 6000 ms for T2w and PDw as in IXI's dual-echo protocol: at TR 4000 ms the PDw signals of CSF
# and GM differ by under 1 %, so their order would depend on the random tissue parameters.
# FLAIR: a clinical 1.5 T inversion-recovery spin echo (TR 9000, TE 120 ms), TI nulling the nominal
# CSF (about 1,700 ms); docs/method.md ("The phantom's FLAIR", "The phantom's DIR") gives the sources. DIR: the same TR,
# a short TE (25 ms) and two inversions that null the nominal CSF and WM (about 2,400 and 340 ms), so GM
# alone is bright: no map of T1w, increasing or decreasing, gives it.
FLAIR_TR_MS = 9000.0
PROTOCOLS = {
    "T1w": Protocol(500.0, 10.0),
    "T2w": Protocol(6000.0, 100.0),
    "PDw": Protocol(6000.0, 10.0),
    "FLAIR": Protocol(FLAIR_TR_MS, 120.0, (null_inversion_time(BRAIN_TISSUES["CSF"].t1_ms, FLAIR_TR_MS),)),
    "DIR": Protocol(FLAIR_TR_MS, 25.0, double_null_inversion_times(
        BRAIN_TISSUES["CSF"].t1_ms, BRAIN_TISSUES["WM"].t1_ms, FLAIR_TR_MS)),
}


def tissues_by_brightness(contrast: str) -> tuple[int, ...]:
    """The brain tissues' labels (CSF 1, GM 2, WM 3) from darkest to brightest at nominal parameters."""
    if contrast not in PROTOCOLS:
        raise KeyError(f"contrast {contrast!r}: the head model renders only {sorted(PROTOCOLS)}")
    signals = [BRAIN_TISSUES[name].signal(PROTOCOLS[contrast]) for name in TISSUES]
    return tuple(int(i) + 1 for i in np.argsort(signals))


@dataclass
class Anatomy:
    """Partial volumes on one grid; every array is (X, Y, Z) float32 in [0, 1].

    `fractions` holds CSF, GM, WM and (with the head) fat, muscle, bone; they sum to at most 1, the
    rest is air. `brain` is the inside-brain fraction (CSF + GM + WM).
    """

    fractions: dict[str, np.ndarray]
    brain: np.ndarray
    affine: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """(X, Y, Z) uint8: argmax of CSF/GM/WM (1, 2, 3), 0 where the inside-brain fraction is below 0.5."""
        stacked = np.stack([self.fractions[name] for name in TISSUES])
        return np.where(self.brain >= 0.5, stacked.argmax(axis=0) + 1, 0).astype(np.uint8)


@dataclass(frozen=True)
class Texture:
    """Smooth multiplicative heterogeneity of T1, T2 and PD, each (X, Y, Z) float32 around 1."""

    t1: np.ndarray
    t2: np.ndarray
    pd: np.ndarray


def mr_signal(pd, t1_ms, t2_ms, protocol: Protocol):
    """Magnitude spin-echo signal S = PD |Mz| exp(-TE/T2) (longitudinal_magnetisation): spin echo,
    inversion recovery or double inversion recovery; floats or broadcastable arrays."""
    mz = longitudinal_magnetisation(t1_ms, protocol.tr_ms, protocol.inversions_ms)
    return pd * np.abs(mz) * np.exp(-protocol.te_ms / t2_ms)


def clean_image(anatomy: Anatomy, tissues: dict[str, Tissue], texture: Texture, protocol: Protocol) -> np.ndarray:
    """Noise- and bias-free image (X, Y, Z) float32: the partial-volume mix of the tissues' textured signals."""
    image = np.zeros(anatomy.brain.shape, np.float32)
    for name, fraction in anatomy.fractions.items():
        tissue = tissues[name]
        signal = mr_signal(tissue.pd * texture.pd, tissue.t1_ms * texture.t1, tissue.t2_ms * texture.t2, protocol)
        image += fraction * signal
    return image


def _ramp(distance_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Partial-volume step: 0 well before distance 0, 1 well after, linear over one voxel."""
    return np.clip(distance_mm / voxel_mm + 0.5, 0.0, 1.0)


def _head_fractions(outside_mm: np.ndarray, voxel_mm: float) -> dict[str, np.ndarray]:
    """Head tissue fractions from the distance (mm) outside the brain, stacking HEAD_LAYERS outward."""
    fractions = {name: np.zeros_like(outside_mm) for name in HEAD_TISSUES}
    start = 0.0
    for thickness, mix in HEAD_LAYERS:
        layer = _ramp(outside_mm - start, voxel_mm) - _ramp(outside_mm - start - thickness, voxel_mm)
        for name, share in mix.items():
            fractions[name] += share * layer
        start += thickness
    return fractions


def head_anatomy(
    gm: np.ndarray, wm: np.ndarray, outside_mm: np.ndarray, voxel_mm: float, affine: np.ndarray, *, with_head: bool
) -> Anatomy:
    """Partial volumes from GM/WM maps and the distance (mm) beyond the brain surface, all (X, Y, Z)."""
    brain = 1.0 - _ramp(outside_mm, voxel_mm)
    # GM and WM are confined to the brain; what the brain holds beyond them is CSF (sulci, ventricles, rim).
    tissue = gm + wm
    shrink = np.where(tissue > brain, brain / np.maximum(tissue, 1e-6), 1.0)
    gm, wm = gm * shrink, wm * shrink
    fractions = {"CSF": np.clip(brain - gm - wm, 0.0, 1.0), "GM": gm, "WM": wm}
    if with_head:
        fractions.update(_head_fractions(outside_mm, voxel_mm))
    fractions = {name: value.astype(np.float32) for name, value in fractions.items()}
    return Anatomy(fractions=fractions, brain=brain.astype(np.float32), affine=affine.copy())
