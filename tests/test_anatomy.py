"""Held-out anatomy (issue 16): Colin27's tissue maps from the project's labelling, phantom subjects
rendered from them, and the clear errors. Needs Debian's mricron-data (installed by .ci/run)."""

from pathlib import Path

import numpy as np
import pytest

from midiffusion import anatomy, phantom
from midiffusion.config import schema
from midiffusion.io import InputError, load_volume, save_volume
from midiffusion.layout import TISSUE_LABELS
from midiffusion.template import load_template

VOXEL_MM = 4


@pytest.fixture(scope="module")
def colin_maps(tmp_path_factory) -> Path:
    return anatomy.write_tissue_maps("colin27", VOXEL_MM, tmp_path_factory.mktemp("anatomy") / "colin27.nii.gz")


def test_held_out_subject_ids():
    assert anatomy.held_out_subjects("colin27", 2) == ["colin01", "colin02"]
    assert anatomy.held_out_subjects("colin27", 0) == []
    assert anatomy.subject_anatomies("colin27", ["colin01"], ["08", "colin01"]) == {
        "08": anatomy.TRAINING_ANATOMY, "colin01": "colin27"}


def test_the_schema_offers_exactly_the_known_heads():
    """The config schema's enum (checked before any job) and anatomy.HELD_OUT_HEADS name the same heads."""
    offered = schema()["properties"]["phantom"]["properties"]["held_out_anatomy"]["enum"]
    assert sorted(offered) == sorted(anatomy.HELD_OUT_HEADS)


def test_unknown_or_missing_anatomy_says_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="unknown anatomy 'bert'"):
        anatomy.held_out_subjects("bert", 1)
    missing = anatomy.HeldOutHead(tmp_path / "ch2.nii.gz", "colin", "apt-get install mricron-data")
    monkeypatch.setitem(anatomy.HELD_OUT_HEADS, "colin27", missing)
    with pytest.raises(InputError, match=r"ch2.nii.gz is missing; install it \(apt-get install mricron-data\)"):
        anatomy.held_out_subjects("colin27", 1)


def test_maps_are_a_real_adult_brain_not_the_template(colin_maps):
    held_out, template = load_template(VOXEL_MM, colin_maps), load_template(VOXEL_MM)
    gm, wm = held_out.gm[held_out.brain], held_out.wm[held_out.brain]
    assert 0.0 <= gm.min() and gm.max() <= 1.0 and (gm + wm).max() <= 1.0 + 1e-5
    volume_ml = held_out.brain.sum() * VOXEL_MM**3 / 1000
    assert 1400 < volume_ml < 2400  # an adult brain in MNI space (the template's: about 1800 ml)
    # Another brain: its GM fraction differs from the template's at the same world points.
    assert abs(volume_ml - template.brain.sum() * VOXEL_MM**3 / 1000) > 20


def test_held_out_phantom_subject_has_adult_tissue_fractions(colin_maps, tmp_path):
    written = phantom.build_subject(tmp_path, "colin01", voxel_mm=VOXEL_MM, anatomy_maps=colin_maps)
    labels = load_volume(next(p for p in written if p.name.endswith("_dseg.nii.gz"))).data
    brain = labels > 0
    shares = {name: (labels[brain] == value).mean() for name, value in TISSUE_LABELS.items()}
    # hard labels of an adult brain (docs/method.md, "Tissue labels"): the phantom's own are 6 / 62 / 31 %
    assert 0.03 < shares["CSF"] < 0.2 and 0.45 < shares["GM"] < 0.7 and 0.2 < shares["WM"] < 0.45
    image = load_volume(next(p for p in written if p.name.endswith("_T1w.nii.gz"))).data
    assert image[labels == 3].mean() > image[labels == 2].mean() > image[labels == 1].mean()  # T1w order


def test_maps_of_the_wrong_kind_are_named(tmp_path):
    flat = save_volume(tmp_path / "flat.nii.gz", np.zeros((4, 4, 4)), np.eye(4) * [4, 4, 4, 1])
    with pytest.raises(InputError, match="flat.nii.gz: expected held-out tissue maps"):
        load_template(VOXEL_MM, flat)
