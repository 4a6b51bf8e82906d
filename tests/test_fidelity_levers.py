"""tools/studies/fidelity_levers.py: the means table, its Markdown, the SDEdit curve and the figure, on a
hand-made table (the translations and nnU-Net are the workflow's, tested elsewhere)."""

import numpy as np
import pandas as pd
import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def levers():
    return load_script("tools/studies/fidelity_levers.py")


def table(levers) -> pd.DataFrame:
    """Two subjects of each anatomy, two sources; atlas_map (reference) and five levers."""
    rows = []
    variants = [("atlas_map", "reference", {}), ("default", "lever", {"start": "noise", "start_t0": 0.5}),
                ("sdedit_atlas_t0.0", "lever", {"start": "atlas_map", "start_t0": 0.0}),
                ("sdedit_atlas_t0.5", "lever", {"start": "atlas_map", "start_t0": 0.5}),
                ("lmi_grad_0.1", "lever", {"start": "noise", "start_t0": 0.5, "lmi_gradient_scale": 0.1}),
                ("sdedit_atlas_t0.5_guidance_1", "lever", {"start": "atlas_map", "start_t0": 0.5,
                                                           "guidance_scale": 1.0})]
    for v, (variant, kind, settings) in enumerate(variants):
        for subject, anatomy in [("sub-colin01", "colin27"), ("sub-08", "icbm152_2009a"),
                                 ("sub-09", "icbm152_2009a"), ("sub-colin02", "colin27")]:
            for source in ("PDw", "T2w"):
                base = {"start": np.nan, "start_t0": np.nan, "lmi_gradient_scale": np.nan, "guidance_scale": np.nan,
                        "eta": np.nan, "n_samples": np.nan}
                if kind == "lever":
                    base |= {"lmi_gradient_scale": 0.0, "guidance_scale": 5.0, "eta": 1.0, "n_samples": 1}
                    base |= settings
                offset = 0.1 * v + (0.01 if subject.endswith("9") or subject.endswith("2") else 0.0)
                rows.append({"variant": variant, "kind": kind, "anatomy": anatomy, "subject": subject,
                             "source": source, **base, "corr": 0.5 + offset, "ssim": 0.3, "psnr": 15.0,
                             "dice": 0.6 + offset, "dice_CSF": 0.5, "dice_GM": 0.7, "dice_WM": 0.6,
                             "seconds_per_slice": float(v)})
    return pd.DataFrame(rows, columns=levers.COLUMNS)


def test_summary_means_over_subjects_in_a_sensible_order(levers):
    means = levers.summary(table(levers))
    assert len(means) == 6 * 2 * 2 and set(means["n"]) == {2}
    # The training anatomy first, T2w before PDw, the variants in the table's order.
    first = means.iloc[:5]
    assert set(first["anatomy"]) == {"icbm152_2009a"} and set(first["source"]) == {"T2w"}
    assert list(first["variant"]) == ["atlas_map", "default", "sdedit_atlas_t0.0", "sdedit_atlas_t0.5", "lmi_grad_0.1"]
    assert means.iloc[12]["anatomy"] == "colin27"
    assert first["dice"].tolist() == pytest.approx([0.605, 0.705, 0.805, 0.905, 1.005])


def test_markdown_has_the_means_and_the_pivots(levers):
    text = levers.markdown(table(levers))
    assert "| variant" in text and "s/slice" in text and "## Dice per variant" in text
    assert "icbm152_2009a T2w" in text and "colin27 PDw" in text


def test_sdedit_curve_runs_from_the_map_to_the_noise_start(levers):
    curve = levers.sdedit_curve(table(levers))
    t2w = curve[(curve["anatomy"] == "colin27") & (curve["source"] == "T2w")]
    # The SDEdit levers at t0 = 0 and 0.5, the noise start at 1; the reference map and the gradient lever
    # are left out.
    assert t2w["start_t0"].tolist() == [0.0, 0.5, 1.0]
    assert t2w["dice"].tolist() == pytest.approx([0.805, 0.905, 0.705])
    # Without guidance: the same t0 = 0 (no step runs), the unguided SDEdit lever; no noise start here.
    unguided = levers.sdedit_curve(table(levers), guidance_scale=1.0)
    t2w = unguided[(unguided["anatomy"] == "colin27") & (unguided["source"] == "T2w")]
    assert t2w["start_t0"].tolist() == [0.0, 0.5]
    assert t2w["dice"].tolist() == pytest.approx([0.805, 1.105])


def test_the_figure_is_written(levers, tmp_path):
    out = levers.plot(table(levers), tmp_path / "levers.png")
    assert out.stat().st_size > 10_000


def test_winners_name_the_best_map_and_sampled_levers(levers):
    frame = table(levers)
    frame.loc[frame["variant"] == "sdedit_atlas_t0.0", "dice"] = 2.0  # no step runs: not a lever
    best = levers.winners(frame)
    assert len(best) == 4 and set(best["map"]) == {"atlas_map"}
    assert set(best["lever by Dice"]) == {"sdedit_atlas_t0.5_guidance_1"}
    assert best["lever by Dice: Dice"].tolist() == pytest.approx([1.105] * 4)
