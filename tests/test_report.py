"""The report stage (tables, figures, evaluate): summary statistics, tables and figures on hand-made
frames and tiny synthetic NIfTIs."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, load_script
from midiffusion.anatomy import TRAINING_ANATOMY
from midiffusion.evaluate import intensity_bound_corr_tables, intensity_bound_tables, segmentation_dice_tables
from midiffusion.figures import GridRow, plot_dice, plot_sampler_curve, plot_translation_grid
from midiffusion.io import InputError, save_volume
from midiffusion.tables import (
    headline_table,
    markdown_table,
    paired_difference,
    summarise,
    tag_anatomy,
    training_table,
    verdict_table,
    write_tables,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _long_frame() -> pd.DataFrame:
    """Two subjects, two sources, three methods (one outside METHOD_ORDER); Dice and PSNR."""
    records = []
    for subject, offset in (("s1", 0.0), ("s2", 0.2)):
        for source in ("T2w", "PDw"):
            for method, base in (("none", 0.2), ("zzz", 0.4), ("midiffusion", 0.6), ("oracle", 0.7)):
                for name in ("CSF", "GM", "WM", "mean"):
                    records.append((subject, source, method, "dice", name, base + offset))
                records.append((subject, source, method, "psnr", "", 20 + 10 * base + offset))
    return pd.DataFrame.from_records(records, columns=["subject", "source", "method", "metric", "class", "value"])


def test_summarise_mean_sd_n_by_hand():
    frame = pd.DataFrame({
        "subject": ["a", "b", "c", "a", "b"],
        "source": ["T2w"] * 5,
        "method": ["none", "none", "none", "oracle", "oracle"],
        "metric": ["dice"] * 3 + ["psnr"] * 2,
        "class": ["GM"] * 3 + [np.nan, np.nan],  # a CSV round trip turns "" into NaN
        "value": [1.0, 2.0, 6.0, 30.0, np.nan],
    })
    summary = summarise(frame)
    assert summary["method"].tolist() == ["oracle", "none"]
    none = summary[summary["method"] == "none"].iloc[0]
    assert none["mean"] == pytest.approx(3.0)
    assert none["sd"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    assert none["n"] == 3
    oracle = summary[summary["method"] == "oracle"].iloc[0]
    assert (oracle["class"], oracle["mean"], oracle["n"]) == ("", 30.0, 1)
    assert math.isnan(oracle["sd"])


def test_summarise_rejects_missing_columns():
    with pytest.raises(InputError, match="value"):
        summarise(pd.DataFrame({"subject": [], "source": [], "method": [], "metric": [], "class": []}))


def test_write_tables_files_parse_with_right_rows(tmp_path):
    frame = _long_frame()
    paths = write_tables(frame, tmp_path / "tables")
    assert set(paths) == {"long", "summary", "markdown", "verdict", "headline"}
    assert len([line for line in paths["headline"].read_text().splitlines() if line.startswith("| ")]) == 1 + 2
    long_back = pd.read_csv(paths["long"])
    assert len(long_back) == len(frame)
    summary = pd.read_csv(paths["summary"])
    assert len(summary) == 4 * 2 * 5  # methods x sources x (4 Dice classes + PSNR)
    assert summary["method"].unique().tolist() == ["oracle", "midiffusion", "none", "zzz"]
    gm = summary[(summary["method"] == "midiffusion") & (summary["source"] == "PDw") & (summary["class"] == "GM")]
    assert gm["mean"].item() == pytest.approx(0.7)
    assert gm["sd"].item() == pytest.approx(np.std([0.6, 0.8], ddof=1))
    # the CSV read back (class "" -> NaN) summarises like the original frame
    pd.testing.assert_frame_equal(summarise(long_back), summarise(frame), check_dtype=False)

    lines = [line for line in paths["markdown"].read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["Method", "Source", "n", "Dice CSF", "Dice GM", "Dice WM", "Dice mean", "PSNR (dB)"]
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[:2] for row in body] == [
        [method, source] for method in ("oracle", "midiffusion", "none", "zzz") for source in ("PDw", "T2w")
    ]
    oracle_pdw = body[0]
    assert oracle_pdw[2] == "2"
    assert oracle_pdw[3] == f"0.800 ± {np.std([0.7, 0.9], ddof=1):.3f}"
    assert oracle_pdw[7] == f"27.10 ± {np.std([27.0, 27.2], ddof=1):.2f}"


def test_markdown_shows_infinite_psnr_and_single_values():
    frame = pd.DataFrame({
        "subject": ["a"], "source": ["T1w"], "method": ["oracle"], "metric": ["psnr"], "class": [""],
        "value": [math.inf],
    })
    assert "∞" in markdown_table(frame)
    single = frame.assign(value=[25.0])
    assert "25.00 ± n/a" in markdown_table(single)


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_dice_writes_png(tmp_path):
    out = plot_dice(_long_frame(), tmp_path / "fig" / "dice.png")
    _assert_png(out)
    assert list((tmp_path / "fig").iterdir()) == [out]  # no temporary files left behind


def test_plot_dice_needs_dice_values(tmp_path):
    frame = _long_frame()
    with pytest.raises(InputError, match="Dice"):
        plot_dice(frame[frame["metric"] != "dice"], tmp_path / "dice.png")


def _tiny_volumes(tmp_path, names, shape=(16, 16, 5)):
    rng = np.random.default_rng(0)
    paths = {}
    for name in names:
        paths[name] = save_volume(tmp_path / f"{name}.nii.gz", rng.uniform(-1, 1, shape), np.eye(4))
    for name in names:
        paths[f"{name}_seg"] = save_volume(
            tmp_path / f"{name}_seg.nii.gz", rng.integers(0, 4, shape), np.eye(4), dtype=np.uint8
        )
    return paths


def test_plot_translation_grid_writes_png(tmp_path):
    names = ["source", "none", "midiffusion", "target"]  # histmatch and unguided missing: skipped
    paths = _tiny_volumes(tmp_path, names)
    rows = [
        GridRow(source=source, images={name: paths[name] for name in names},
                segmentations={name: paths[f"{name}_seg"] for name in names[1:]})
        for source in ("T2w", "PDw")
    ]
    rows[1].images.pop("none")  # a cell one row lacks stays blank
    _assert_png(plot_translation_grid(rows, tmp_path / "grid.png"))


def test_plot_translation_grid_rejects_other_grid(tmp_path):
    paths = _tiny_volumes(tmp_path, ["source"])
    other = save_volume(tmp_path / "other.nii.gz", np.zeros((16, 16, 6)), np.eye(4))
    with pytest.raises(InputError, match="other.nii.gz"):
        plot_translation_grid([GridRow("T2w", {"source": paths["source"], "target": other})], tmp_path / "g.png")


def test_plot_sampler_curve_writes_png(tmp_path):
    csv = tmp_path / "sampling.csv"
    pd.DataFrame({
        "sampler": ["ddpm", "ddim", "ddim", "ddim"],
        "steps": [1000, 10, 50, 100],
        "network_calls": [1000, 10, 50, 100],
        "psnr": [24.0, 21.0, 23.0, 23.5],
        "ssim": [0.85, 0.75, 0.82, 0.84],
        "seconds_per_slice": [30.0, 0.3, 1.5, 3.0],
        "device": ["cpu"] * 4,
    }).to_csv(csv, index=False)
    _assert_png(plot_sampler_curve(csv, tmp_path / "sampler.png"))
    pd.read_csv(csv).assign(dice_mean=[0.7, 0.6, 0.65, 0.7]).to_csv(csv, index=False)
    _assert_png(plot_sampler_curve(csv, tmp_path / "sampler_dice.png"))
    pd.DataFrame({"sampler": ["ddim"], "steps": [10]}).to_csv(csv, index=False)
    with pytest.raises(InputError, match="psnr"):
        plot_sampler_curve(csv, tmp_path / "bad.png")


def test_readme_summary_replaces_only_the_marked_block():
    readme = "intro\n<!-- summary:start -->\nold\n<!-- summary:end -->\nrest\n"
    updated = load_script("scripts/readme_results.py").readme_with_table(readme, "summary", "# Evaluation summary\n\n| a |\n|---|\n| 1 |\n")
    assert updated == "intro\n<!-- summary:start -->\n| a |\n|---|\n| 1 |\n<!-- summary:end -->\nrest\n"


@pytest.mark.parametrize("document", ["README.md", "docs/results.md", "docs/history.md"])
def test_documents_show_the_committed_tables(document):
    script = load_script("scripts/readme_results.py")
    text = (ROOT / document).read_text()
    assert script.document_with_tables(text, document) == text, "run scripts/readme_results.py"


def test_intensity_bound_tables_per_contrast(tmp_path):
    labels = np.repeat(np.array([1, 2, 3])[:, None, None], 2, axis=1).repeat(2, axis=2).astype(np.float32)
    affine = np.eye(4)
    images = {"T1w": labels / 2 - 1, "PDw": np.zeros_like(labels)}  # separable, flat
    cases = []
    for subject in ("s1", "s2"):
        for name, data in [("labels", labels), ("mask", np.ones_like(labels)), *images.items()]:
            save_volume(tmp_path / f"{subject}_{name}.nii.gz", data, affine)
        cases += [(subject, contrast, *(str(tmp_path / f"{subject}_{n}.nii.gz") for n in (contrast, "labels", "mask")))
                  for contrast in images]
    table = intensity_bound_tables(cases, tmp_path / "bound.csv", tmp_path / "bound.md")
    means = table[table["class"] == "mean"].groupby("contrast")["dice"].mean()
    assert means["T1w"] == 1.0
    assert means["PDw"] == pytest.approx(1 / 3 * (2 * 4 / (12 + 4)))  # all called CSF (first of a tie)
    assert pd.read_csv(tmp_path / "bound.csv").shape == (2 * 2 * 4, 5)  # anatomy (blank), subject, contrast, class, dice
    markdown = (tmp_path / "bound.md").read_text().splitlines()
    assert markdown[0].split("|")[1].strip() == "Contrast"
    assert [line.split("|")[1].strip() for line in markdown[2:]] == ["T1w", "PDw"]
    assert "1.000 ± 0.000" in markdown[2]


def _long_corr(rows):
    """A long metrics table of (subject, anatomy, source, method, metric, value) rows."""
    return pd.DataFrame([{"subject": s, "anatomy": a, "source": c, "method": m, "metric": k, "class": "", "value": v}
                         for s, a, c, m, k, v in rows])


def test_intensity_bound_corr_tables_beside_the_run_s_translations(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.uniform(-1, 1, size=(20, 20, 20))
    volumes = {"T2w": source, "T1w": -source, "noise": rng.uniform(-1, 1, source.shape), "mask": np.ones_like(source)}
    for name, data in volumes.items():
        save_volume(tmp_path / f"{name}.nii.gz", data, np.eye(4))
    path = {name: str(tmp_path / f"{name}.nii.gz") for name in volumes}
    metrics = tmp_path / "metrics_long.csv"
    _long_corr([("01", "colin27", "T2w", "invert", "corr", 0.9), ("01", "colin27", "T2w", "midiffusion", "corr", 0.7),
                ("01", "colin27", "T2w", "invert", "dice", 0.5),  # not a correlation
                ("01", "colin27", "T2w", "strong_aug", "corr", 0.1),  # the source, another segmenter: not a column
                ("01", "colin27", "T2w", "oracle", "corr", 1.0),  # reads the target: not a translation
                ("02", "colin27", "T2w", "invert", "corr", 0.8), ("02", "colin27", "T2w", "midiffusion", "corr", 0.6),
                ]).to_csv(metrics, index=False)
    cases = [("01", "T2w", path["T2w"], path["T1w"], path["mask"]),  # the target is a map of the source: r = 1
             ("02", "T2w", path["noise"], path["T1w"], path["mask"])]  # unrelated: r near 0
    means = intensity_bound_corr_tables(cases, metrics, tmp_path / "corr.csv", tmp_path / "corr.md")
    rows = pd.read_csv(tmp_path / "corr.csv", dtype={"subject": str}).set_index("subject")
    assert list(rows.columns) == ["anatomy", "source", "bound", "midiffusion", "invert"]
    assert rows.loc["01", "bound"] == pytest.approx(1.0, abs=1e-3)
    assert abs(rows.loc["02", "bound"]) < 0.15  # 64 bins fitted to 8,000 voxels of noise: r about 0.09
    assert (rows.loc["01", "invert"], rows.loc["02", "midiffusion"]) == (0.9, 0.6)
    assert means.loc[0, "best intensity map (bound)"] == pytest.approx(rows["bound"].mean(), abs=1e-4)
    assert (tmp_path / "corr.md").read_text().splitlines()[0].split("|")[1].strip() == "Anatomy"
    with pytest.raises(InputError, match="no metrics of test subject 03"):
        intensity_bound_corr_tables([("03", "T2w", *cases[0][2:])], metrics, tmp_path / "x.csv", tmp_path / "x.md")


def test_segmentation_dice_tables_mean_and_sd_over_subjects(tmp_path):
    labels = np.array([1, 1, 2, 2, 3, 3], dtype=np.float32).reshape(6, 1, 1)
    segmentations = {  # s1 perfect; s2 one CSF voxel called GM: CSF 2/3, GM 4/5, WM 1
        "s1": labels,
        "s2": np.array([1, 2, 2, 2, 3, 3], dtype=np.float32).reshape(6, 1, 1),
    }
    save_volume(tmp_path / "labels.nii.gz", labels, np.eye(4))
    cases = []
    for subject, data in segmentations.items():
        save_volume(tmp_path / f"{subject}.nii.gz", data, np.eye(4))
        cases.append((subject, "PDw", str(tmp_path / f"{subject}.nii.gz"), str(tmp_path / "labels.nii.gz")))
    table = segmentation_dice_tables(cases, tmp_path / "dice.csv", tmp_path / "dice.md")
    s2 = table[table["subject"] == "s2"].set_index("class")["dice"]
    assert s2.to_dict() == pytest.approx({"CSF": 2 / 3, "GM": 0.8, "WM": 1.0, "mean": (2 / 3 + 0.8 + 1) / 3})
    markdown = (tmp_path / "dice.md").read_text().splitlines()
    csf_mean, csf_sd = (1 + 2 / 3) / 2, np.std([1, 2 / 3], ddof=1)
    assert markdown[2].split("|")[2].strip() == f"{csf_mean:.3f} ± {csf_sd:.3f}"


def test_segmentation_dice_tables_split_by_anatomy_training_anatomy_first(tmp_path):
    labels = np.array([1, 1, 2, 2, 3, 3], dtype=np.float32).reshape(6, 1, 1)
    wrong = np.array([1, 2, 2, 2, 3, 3], dtype=np.float32).reshape(6, 1, 1)  # mean Dice (2/3 + 0.8 + 1) / 3
    save_volume(tmp_path / "labels.nii.gz", labels, np.eye(4))
    save_volume(tmp_path / "right.nii.gz", labels, np.eye(4))
    save_volume(tmp_path / "wrong.nii.gz", wrong, np.eye(4))
    cases = [(subject, "FLAIR", str(tmp_path / f"{name}.nii.gz"), str(tmp_path / "labels.nii.gz"))
             for subject, name in [("colin01", "wrong"), ("01", "right"), ("02", "right")]]
    anatomies = {"01": TRAINING_ANATOMY, "02": TRAINING_ANATOMY, "colin01": "colin27"}
    table = segmentation_dice_tables(cases, tmp_path / "dice.csv", tmp_path / "dice.md", anatomies)
    assert table.groupby("subject")["anatomy"].first().to_dict() == anatomies
    rows = [line.split("|")[1:-1] for line in (tmp_path / "dice.md").read_text().splitlines()[2:]]
    assert [(row[0].strip(), row[-1].strip()) for row in rows] == [
        (TRAINING_ANATOMY, "1.000 ± 0.000"), ("colin27", f"{(2 / 3 + 0.8 + 1) / 3:.3f} ± n/a")]


def test_segmentation_dice_tables_name_the_file_on_a_grid_mismatch(tmp_path):
    save_volume(tmp_path / "labels.nii.gz", np.ones((4, 4, 4)), np.eye(4))
    save_volume(tmp_path / "seg.nii.gz", np.ones((4, 4, 3)), np.eye(4))
    with pytest.raises(InputError, match="seg.nii.gz"):
        segmentation_dice_tables([("s1", "PDw", str(tmp_path / "seg.nii.gz"), str(tmp_path / "labels.nii.gz"))],
                                 tmp_path / "dice.csv", tmp_path / "dice.md")
    assert not (tmp_path / "dice.csv").exists()


def test_verdict_ranks_zero_shot_roads_per_source():
    """Would catch the oracle (a bound that reads the real target) counted as a road, or a wrong ranking."""
    verdict = verdict_table(_long_frame())
    for source in ("PDw", "T2w"):
        rows = verdict[verdict["Source"] == source]
        assert rows["Method"].tolist() == ["midiffusion", "zzz", "none"]  # oracle left out
        assert rows["Rank"].tolist() == [1, 2, 3]
        assert rows["Gap to best"].tolist() == ["+0.000", "-0.200", "-0.400"]
        assert rows["Dice mean"].iloc[0] == "0.700"  # mean over s1 (0.6) and s2 (0.8)
    assert verdict.loc[verdict["Method"] == "midiffusion", "Needs"].iloc[0].startswith("target images")


def test_paired_difference_by_hand():
    a = pd.Series({"s1": 0.70, "s2": 0.74, "s3": 0.72})
    # differences 0.10, 0.12, 0.11: mean 0.11, sd 0.01, t(0.975, 2) = 4.303 -> half-width 0.02484
    diff = paired_difference(a, a - pd.Series({"s1": 0.10, "s2": 0.12, "s3": 0.11}))
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(0.11) and diff["sd"] == pytest.approx(0.01)
    assert (diff["low"], diff["high"]) == (pytest.approx(0.11 - 0.02484, abs=1e-5), pytest.approx(0.11 + 0.02484, abs=1e-5))
    assert diff["call"] == "win"
    noisy = paired_difference(a, a - pd.Series({"s1": 0.10, "s2": -0.08, "s3": 0.01}))
    assert noisy["call"] == "tie"  # mean +0.01, sd 0.09: the interval holds 0
    assert paired_difference(a, a + 0.05)["call"] == "loss"  # the same loss on every subject
    assert paired_difference(a.iloc[:1], a.iloc[:1] - 0.3)["call"] == "tie"  # one subject: no interval


def test_headline_sets_midiffusion_beside_the_best_other_road():
    """Would catch a bound (oracle) or midiffusion's own image counted as the rival, or unpaired subjects."""
    headline = headline_table(_long_frame())
    assert headline["Source"].tolist() == ["PDw", "T2w"]
    row = headline.iloc[0]
    assert row["best other road"] == "none"  # zzz is no registered road; oracle and midiffusion are no rivals
    assert row["paired difference"] == "+0.400 ± 0.000" and row["verdict"] == "win"
    assert row["midiffusion"].startswith("0.700") and row["oracle"].startswith("0.800")
    assert row["n"] == 2


def test_held_out_anatomy_gets_its_own_rows(tmp_path):
    """Would catch held-out subjects averaged with the training anatomy's, or a subject left untagged."""
    frame = tag_anatomy(_long_frame(), {"s1": "icbm152_2009a", "s2": "colin27"})
    summary = summarise(frame)
    dice = summary[(summary["metric"] == "dice") & (summary["class"] == "mean") & (summary["method"] == "midiffusion")]
    assert dice.groupby("anatomy")["mean"].first().to_dict() == pytest.approx({"icbm152_2009a": 0.6, "colin27": 0.8})
    assert summary["anatomy"].iloc[0] == "icbm152_2009a"  # the training anatomy's rows first
    lines = markdown_table(frame).splitlines()
    assert lines[0].split("|")[1].strip() == "Anatomy" and "colin27" in lines[-1]
    verdict = verdict_table(frame)
    assert verdict.groupby(["Anatomy", "Source"]).size().tolist() == [3, 3, 3, 3]
    _assert_png(plot_dice(frame, tmp_path / "dice.png"))
    with pytest.raises(InputError, match=r"no anatomy given for subjects \['s2'\]"):
        tag_anatomy(_long_frame(), {"s1": "colin27"})


def _curve(ema):
    return pd.DataFrame({"epoch": range(len(ema)), "ema_pseudo_dice": ema})


def test_rivals_whose_nnunet_still_rises_are_marked():
    rising, flat = _curve(np.linspace(0.2, 0.6, 20)), _curve(np.r_[np.linspace(0.2, 0.6, 15), [0.6] * 5])
    training = training_table({"target": flat, "strong_aug": rising})
    assert training["levelled off"].tolist() == ["yes", "no"]
    assert training["rise over the last quarter"].tolist() == ["+0.000", f"{0.4 * 5 / 19:+.3f}"]
    frame = _long_frame()
    frame.loc[frame["method"] == "zzz", "method"] = "strong_aug"  # the best rival, on the rising nnU-Net
    headline = headline_table(frame, curves={"target": flat, "strong_aug": rising})
    assert (headline["best other road"] == "strong_aug (nnU-Net not levelled off)").all()
    verdict = verdict_table(frame, {"target": flat, "strong_aug": rising}).set_index("Method")
    assert verdict.loc["strong_aug", "nnU-Net levelled off"].tolist() == ["no", "no"]
    assert verdict.loc["none", "nnU-Net levelled off"].tolist() == ["yes", "yes"]
