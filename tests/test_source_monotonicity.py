"""tools/studies/source_monotonicity.py: the best monotone and unconstrained maps of a source, on toy
relations whose answers are known, and on a 4 mm phantom subject."""

import numpy as np
import pytest

from conftest import load_script

SCRIPT = "tools/studies/source_monotonicity.py"
SOURCE = np.random.default_rng(0).uniform(-1, 1, 20_000)


@pytest.fixture(scope="module")
def study():
    return load_script(SCRIPT)


def test_a_plain_source_is_its_own_increasing_map(study):
    r = study.map_corrs(SOURCE, 0.5 * SOURCE + 0.1)
    assert r["as_is"] == pytest.approx(1.0)
    assert r["increasing"] == pytest.approx(1.0, abs=1e-3) and r["any_map"] == pytest.approx(1.0, abs=1e-3)
    assert r["decreasing"] == 0.0  # fitted as a constant


def test_an_inverted_source_needs_the_decreasing_map(study):
    r = study.map_corrs(SOURCE, -SOURCE)
    assert r["as_is"] == pytest.approx(-1.0)
    assert r["decreasing"] == pytest.approx(1.0, abs=1e-3) and r["increasing"] == 0.0


def test_a_v_shaped_relation_is_reached_by_no_monotone_map(study):
    r = study.map_corrs(SOURCE, np.abs(SOURCE))
    assert r["any_map"] > 0.99
    assert max(r["increasing"], r["decreasing"]) < 0.8  # each gets one half of the V right


def test_phantom_rows_order_the_sources(study):
    rows = {row["source"]: row for row in study.subject_rows("01", voxel_mm=4.0, seed=0, anatomy_maps=None)}
    assert set(rows) == {"PDw", "T2w", "FLAIR", "DIR"}
    assert rows["T2w"]["brain_decreasing"] > rows["T2w"]["brain_increasing"]  # T2w: a decreasing map of T1w
    assert rows["FLAIR"]["brain_increasing"] > rows["FLAIR"]["brain_decreasing"]  # FLAIR nulls CSF as T1w darkens it
    dir_, flair = rows["DIR"], rows["FLAIR"]  # GM alone bright: no map of any shape follows T1w as FLAIR's does
    assert dir_["brain_any_map"] < flair["brain_any_map"] - 0.2
    for row in rows.values():
        assert row["brain_any_map"] >= max(row["brain_increasing"], row["brain_decreasing"]) - 1e-9
        assert 0 < row["dice_bound"] <= 1
