"""scripts/intensity_bound_corr.py: the bound per test subject and source of a run, beside the
correlations the run's methods reached, on a hand-made run folder."""

import numpy as np
import pandas as pd
import pytest

from conftest import load_script
from midiffusion.io import save_volume


def test_the_bound_of_an_inverted_source_is_one_and_the_run_s_correlations_come_along(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.uniform(-1, 1, size=(10, 10, 8))
    folder = tmp_path / "results/preprocessed/sub-01"
    for name, data in {"T2w_norm": source, "T1w_norm": -source, "brainmask": np.ones_like(source)}.items():
        save_volume(folder / f"{name}.nii.gz", data, np.eye(4))
    (tmp_path / "results/tables").mkdir(parents=True)
    pd.DataFrame({"subject": "01", "source": "T2w", "method": ["invert", "atlas_map", "midiffusion", "invert"],
                  "metric": ["corr", "corr", "corr", "dice"], "class": "", "value": [0.9, 0.8, 0.7, 0.5],
                  "anatomy": "held_out"}).to_csv(tmp_path / "results/tables/metrics_long.csv", index=False)
    rows = load_script("intensity_bound_corr").bound_rows(tmp_path)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["anatomy"], row["subject"], row["source"]) == ("held_out", "01", "T2w")
    assert row["bound"] == pytest.approx(1.0, abs=1e-3)  # -source is a function of the source's bins, nearly
    assert (row["invert"], row["atlas_map"], row["midiffusion"]) == (0.9, 0.8, 0.7)
