"""Which subjects there are, where their images lie, and the reproducible train/test split.

Layouts: `phantom` (built by the workflow in a BIDS-like tree), `bids`
(sub-*/[ses-*/]anat/sub-*_{T1w,T2w,PDw}.nii.gz) and `ixi` (IXI<id>-<site>-<n>-{T1,T2,PD}.nii.gz).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from .io import InputError

IXI_CONTRASTS = {"T1": "T1w", "T2": "T2w", "PD": "PDw"}
IXI_PATTERN = re.compile(r"^IXI(?P<id>\d+)-(?P<site>[A-Za-z]+)-(?P<n>\d+)-(?P<contrast>T1|T2|PD)\.nii(\.gz)?$")
BIDS_PATTERN = re.compile(r"^sub-(?P<id>[A-Za-z0-9]+)(_ses-[A-Za-z0-9]+)?_(?P<contrast>T1w|T2w|PDw)\.nii(\.gz)?$")


@dataclass(frozen=True)
class Cohort:
    """images: subject -> {contrast: path} for subjects with every contrast; skipped: subject -> missing contrasts."""

    images: dict[str, dict[str, Path]]
    skipped: dict[str, list[str]]

    def skipped_message(self, root: str | Path) -> str:
        return f"{root}: {len(self.skipped)} subject(s) skipped for missing contrasts: {self.skipped}"


@dataclass(frozen=True)
class Split:
    train: list[str]
    test: list[str]


def phantom_subjects(n_subjects: int) -> list[str]:
    return [f"{i:02d}" for i in range(1, n_subjects + 1)]


def find_subjects(layout: str, root: str | Path, contrasts: list[str]) -> Cohort:
    """The subjects that have all `contrasts`, and those skipped for a missing one.
    The first session is used where a BIDS subject has several."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data.root: {root} is not a folder")
    if layout == "ixi":
        found = _scan(root.glob("IXI*.nii*"), IXI_PATTERN, lambda m: (m["id"], IXI_CONTRASTS[m["contrast"]]))
    elif layout in ("bids", "phantom"):
        found = _scan(sorted(root.glob("sub-*/**/anat/sub-*.nii*")), BIDS_PATTERN, lambda m: (m["id"], m["contrast"]))
    else:
        raise InputError(f"data.layout: unknown layout {layout!r}")
    complete = {s: images for s, images in found.items() if all(c in images for c in contrasts)}
    if not complete:
        raise InputError(f"{root}: no subject with all of {contrasts} in the {layout} layout")
    return Cohort(
        images={s: {c: complete[s][c] for c in contrasts} for s in sorted(complete)},
        skipped={s: sorted(set(contrasts) - set(found[s])) for s in sorted(set(found) - set(complete))},
    )


def _scan(paths, pattern: re.Pattern, key) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    for path in paths:
        match = pattern.match(Path(path).name)
        if match:
            subject, contrast = key(match)
            found.setdefault(subject, {}).setdefault(contrast, Path(path))
    return found


def split_subjects(subjects: list[str], n_test: int, seed: int) -> Split:
    """Reproducible split: shuffle the sorted ids with `seed`, the first n_test are the test subjects."""
    if not 0 < n_test < len(subjects):
        raise InputError(f"split.n_test: {n_test} leaves no train or no test subject among {len(subjects)}")
    shuffled = sorted(subjects)
    random.Random(seed).shuffle(shuffled)
    return Split(train=sorted(shuffled[n_test:]), test=sorted(shuffled[:n_test]))
