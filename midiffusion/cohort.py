"""Which subjects there are, where their images lie, whether every image can be used, the
reproducible train/test split, and the cohort a run's config resolves to (resolve_cohort).

Layouts: `phantom` (built by the workflow in a BIDS-like tree), `bids`
(sub-<id>/[ses-<s>/]anat/sub-<id>[_ses-<s>][_acq-<a>][_ce-<c>][_rec-<r>][_run-<n>]_<suffix>.nii[.gz], any
suffix a contrast: T1w, T2w, PDw, FLAIR, T2starw, ...) and `ixi` (IXI<id>-<site>-<n>-{T1,T2,PD}.nii.gz).
"""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import nibabel as nib
import numpy as np

from .anatomy import held_out_subjects, subject_anatomies
from .config import check_config
from .io import InputError, load_volume, read_json, write_json
from .layout import COHORT_DIR, SPLIT_FILE, bids_image

IXI_CONTRASTS = {"T1": "T1w", "T2": "T2w", "PD": "PDw"}
IXI_PATTERN = re.compile(r"^IXI(?P<id>\d+)-(?P<site>[A-Za-z]+)-(?P<n>\d+)-(?P<contrast>T1|T2|PD)\.nii(\.gz)?$")
BIDS_PATTERN = re.compile(
    r"^sub-(?P<id>[A-Za-z0-9]+)(_ses-(?P<session>[A-Za-z0-9]+))?(_acq-[A-Za-z0-9]+)?(_ce-(?P<agent>[A-Za-z0-9]+))?"
    r"(_rec-[A-Za-z0-9]+)?(_run-[0-9]+)?_(?P<contrast>[A-Za-z0-9]+)\.nii(\.gz)?$"
)
PICK_RULE = "no contrast agent (ce-) first, then the first session, then the first name in sorted order"
# An adult head spans about 140 x 180 x 130 mm (left-right, front-back, top-bottom) and IXI's images
# cover 150 mm or more along every axis. An image under 100 mm along an axis is a partial slab or
# carries wrong voxel sizes: brain extraction against the whole-head template cannot work on it.
MIN_EXTENT_MM = 100.0
# What a cached verdict was reached under: edit it with `image_problem`, so that cached verdicts are redone.
CHECKS = f"readable NIfTI, 3-D, finite voxels, voxel sizes > 0, extent >= {MIN_EXTENT_MM:g} mm per axis"


@dataclass(frozen=True)
class Cohort:
    """images: subject -> {contrast: path} for the contrasts asked that were found (the pick where
    several); notes: lines for the log (the picks made, the subjects left out)."""

    root: Path
    images: dict[str, dict[str, Path]]
    notes: list[str]


@dataclass(frozen=True)
class Split:
    train: list[str]
    test: list[str]


def phantom_subjects(n_subjects: int) -> list[str]:
    return [f"{i:02d}" for i in range(1, n_subjects + 1)]


def find_subjects(layout: str, root: str | Path, contrasts: list[str]) -> Cohort:
    """Every subject with an image in `root`, and its image of each of `contrasts` that exists; where
    there are several, one is picked by PICK_RULE and a note says which."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data.root: {root} is not a folder")
    if layout == "ixi":
        found = _scan(root.glob("IXI*.nii*"), IXI_PATTERN, lambda m: IXI_CONTRASTS[m["contrast"]])
    elif layout in ("bids", "phantom"):
        found = _scan(root.glob("sub-*/**/anat/sub-*.nii*"), BIDS_PATTERN, lambda m: m["contrast"])
    else:
        raise InputError(f"data.layout: unknown layout {layout!r}")
    if not found:
        raise InputError(f"{root}: no image of {contrasts} named as the {layout} layout expects")
    images, notes = {}, []
    for subject in sorted(found):
        candidates = {c: sorted(found[subject][c], key=_preference) for c in contrasts if c in found[subject]}
        images[subject] = {c: paths[0] for c, paths in candidates.items()}
        notes += [_pick_note(root, subject, c, paths) for c, paths in candidates.items() if len(paths) > 1]
    return Cohort(root, images, notes)


def _scan(
    paths: Iterable[Path], pattern: re.Pattern, contrast: Callable[[re.Match], str]
) -> dict[str, dict[str, list[Path]]]:
    """subject -> contrast -> every path whose name matches `pattern`."""
    found: dict[str, dict[str, list[Path]]] = {}
    for path in paths:
        match = pattern.match(path.name)
        if match:
            found.setdefault(match["id"], {}).setdefault(contrast(match), []).append(path)
    return found


def _preference(path: Path) -> tuple[bool, str, str]:
    """Sort key of PICK_RULE; session labels sort as text."""
    match = BIDS_PATTERN.match(path.name)  # None for an IXI name: the name alone decides
    agent, session = (match["agent"], match["session"]) if match else (None, None)
    return agent is not None, session or "", path.name


def _pick_note(root: Path, subject: str, contrast: str, paths: list[Path]) -> str:
    others = ", ".join(path.name for path in paths[1:])
    return f"subject {subject} {contrast}: using {paths[0].relative_to(root)}, not {others} ({PICK_RULE})"


def checked_cohort(cohort: Cohort, contrasts: list[str], exclude: list[str], bad_subjects: Literal["stop", "skip"],
                   cache: str | Path) -> Cohort:
    """The subjects of `cohort` not in `exclude` with every one of `contrasts` in a usable image.
    A subject with a missing contrast or a bad image stops the run, with every problem listed at once
    (`bad_subjects` "stop"), or is left out with a warning among the notes ("skip")."""
    unknown = sorted(set(exclude) - set(cohort.images))
    if unknown:
        raise InputError(f"data.exclude: {unknown} not found in {cohort.root} (found {sorted(cohort.images)})")
    images = {s: found for s, found in cohort.images.items() if s not in exclude}
    problems = _problems(cohort.root, images, contrasts, cache)
    if problems and bad_subjects == "stop":
        raise InputError(
            f"{_problem_list(cohort.root, problems)}\nFix or remove these files, list the subjects in data.exclude "
            f"({json.dumps(sorted(problems))}), or set data.bad_subjects: skip to leave them out with a warning."
        )
    usable = {s: found for s, found in images.items() if s not in problems}
    if not usable:
        raise InputError(f"{cohort.root}: no subject left after data.exclude and data.bad_subjects")
    left_out = [f"Warning: data.bad_subjects: skip leaves out {_problem_list(cohort.root, problems)}"]
    return Cohort(cohort.root, usable, cohort.notes + (left_out if problems else []))


def _problems(
    root: Path, images: dict[str, dict[str, Path]], contrasts: list[str], cache: str | Path
) -> dict[str, list[str]]:
    """subject -> its problems ("file: reason"), for the subjects that have any."""
    verdicts = check_images([path for found in images.values() for path in found.values()], cache)
    problems = {}
    for subject, found in images.items():
        lines = [f"{root}: no {c} image" for c in contrasts if c not in found]
        lines += [f"{path}: {verdicts[path]}" for path in found.values() if verdicts[path]]
        if lines:
            problems[subject] = lines
    return problems


def _problem_list(root: Path, problems: dict[str, list[str]]) -> str:
    lines = [f"  subject {s}: {line}" for s, subject_lines in problems.items() for line in subject_lines]
    return f"{root}: {len(problems)} subject(s) with a missing or bad image:\n" + "\n".join(lines)


def check_images(paths: list[Path], cache: str | Path) -> dict[Path, str | None]:
    """Each image's problem (None: usable). Verdicts are cached in the JSON file `cache` by absolute
    path, size and modification time, so only new or changed files are opened again: `image_problem`
    reads every voxel, slow on a big cohort, and the workflow checks at every start (also `-n`)."""
    cached = _cached_verdicts(Path(cache))
    keys = {path: str(path.resolve()) for path in paths}
    verdicts = {keys[p]: cached[keys[p]] for p in paths if keys[p] in cached and cached[keys[p]]["stamp"] == _stamp(p)}
    stale = [path for path in paths if keys[path] not in verdicts]
    for done, path in enumerate(stale, 1):
        verdicts[keys[path]] = {"stamp": _stamp(path), "problem": image_problem(path)}
        _report_progress(done, len(stale))
    if verdicts != cached:
        write_json(cache, {"checks": CHECKS, "images": verdicts})
    return {path: verdicts[keys[path]]["problem"] for path in paths}


def _report_progress(done: int, total: int) -> None:
    """A line on stderr at every tenth of the images (not tqdm: the workflow's own env has only the core)."""
    if done == total or done % max(1, total // 10) == 0:
        print(f"Checking images: {done}/{total}", file=sys.stderr, flush=True)


def _cached_verdicts(cache: Path) -> dict[str, dict]:
    try:
        stored = read_json(cache)
    except InputError:  # none yet, or unreadable: every image is checked again
        return {}
    return stored["images"] if isinstance(stored, dict) and stored.get("checks") == CHECKS else {}


def _stamp(path: Path) -> list[int] | None:
    """Size and modification time; None for a broken link (e.g. a DataLad file not fetched)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be one of the cohort's head images, or None when it can."""
    try:
        volume = load_volume(path)  # readable, 3-D (or 4-D with one volume), every voxel finite
    except InputError as error:
        return str(error).removeprefix(f"{path}: ")
    header_mm, affine_mm = _written_zooms(path), volume.voxel_mm
    if not (np.all(header_mm > 0) and np.all(affine_mm > 0)):
        return f"voxel size {_mm(header_mm)} mm in the header, {_mm(affine_mm)} mm in the affine: each must be > 0"
    extent_mm = affine_mm * volume.data.shape
    if np.any(extent_mm < MIN_EXTENT_MM):
        return f"field of view {_mm(extent_mm)} mm is under {MIN_EXTENT_MM:g} mm along an axis: too small for a head"
    return None


def _written_zooms(path: Path) -> np.ndarray:
    """The voxel sizes as the header holds them: nibabel's loader replaces a zero one by 1, hiding it."""
    header_class = type(nib.load(path).header)
    with nib.openers.ImageOpener(path) as stream:
        return np.array(header_class.from_fileobj(stream, check=False).get_zooms()[:3], dtype=float)


def _mm(values: Iterable[float]) -> str:
    return " x ".join(f"{value:g}" for value in values)


def split_subjects(subjects: list[str], n_test: int, seed: int, held_out: Sequence[str] = ()) -> Split:
    """Reproducible split: shuffle the sorted ids with `seed`, the first n_test are the test subjects.
    `held_out` ids (a held-out anatomy's phantom subjects) are test subjects besides them, never trained on."""
    if not 0 < n_test < len(subjects):
        raise InputError(f"split.n_test: {n_test} leaves no train or no test subject among {len(subjects)}")
    shuffled = sorted(subjects)
    random.Random(seed).shuffle(shuffled)
    return Split(train=sorted(shuffled[n_test:]), test=sorted(shuffled[:n_test]) + sorted(held_out))


@dataclass(frozen=True)
class RunCohort:
    """The cohort of one run, resolved from its config: every usable subject's images (subject ->
    {contrast: path}), the subjects it uses (data.subjects, else all) and their split, the held-out anatomy's subjects (test
    subjects only) and the anatomy of each test subject where there is a held-out one (else {}),
    and notes for the log (the picks made, the subjects left out)."""

    images: dict[str, dict[str, Path]]
    subjects: list[str]
    split: Split
    held_out: list[str]
    held_out_anatomy: str | None
    anatomies: dict[str, str]
    notes: list[str]

    def record(self) -> dict[str, Any]:
        """What the workflow writes to layout.SPLIT_FILE and scripts read back (read_split)."""
        return {"train": self.split.train, "test": self.split.test, "held_out": self.held_out,
                "held_out_anatomy": self.held_out_anatomy, "anatomies": self.anatomies}


def resolve_cohort(config: Mapping[str, Any]) -> RunCohort:
    """The run's cohort from a validated config: the phantom's subjects (its held-out anatomy's
    besides), or the images found under data.root and checked (every bad file listed at once, the
    verdicts cached in the run's cohort folder); then the config checked against the ids found
    (config.check_config) and the split of data.subjects (all when empty)."""
    data = config["data"]
    contrasts = [data["target"], *data["sources"]]
    if data["layout"] == "phantom":
        anatomy = config["phantom"]["held_out_anatomy"]
        held_out = held_out_subjects(anatomy, config["phantom"]["n_held_out"])  # InputError if not installed
        found = phantom_subjects(config["phantom"]["n_subjects"]) + held_out
        images = {s: {c: bids_image(data["root"], s, c) for c in contrasts} for s in found}
        notes: list[str] = []
    else:
        checked = checked_cohort(find_subjects(data["layout"], data["root"], contrasts), contrasts, data["exclude"],
                                 data["bad_subjects"], cache=COHORT_DIR / "image_checks.json")
        images, notes, anatomy, held_out = dict(sorted(checked.images.items())), checked.notes, None, []
    check_config(config, list(images))  # every typed section, before any job: a bad value names its key
    used = [s for s in images if not data["subjects"] or s in set(data["subjects"])]
    split = split_subjects([s for s in used if s not in held_out], config["split"]["n_test"], config["split"]["seed"],
                           held_out=[s for s in used if s in held_out])
    anatomies = subject_anatomies(anatomy, held_out, split.test) if held_out else {}
    return RunCohort(images, used, split, held_out, anatomy, anatomies, notes)


def read_split(path: str | Path) -> dict[str, Any]:
    """A run's SPLIT_FILE (RunCohort.record): train, test, held_out, held_out_anatomy, anatomies."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: missing; the workflow writes it (`snakemake {SPLIT_FILE}` in the run's folder)")
    return read_json(path)
