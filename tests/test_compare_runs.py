"""tools/studies/compare_runs.py on two hand-made summary tables."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "studies" / "compare_runs.py"


def _summary(path: Path, dice: dict[str, float]) -> Path:
    rows = [{"anatomy": "icbm152_2009a", "method": method, "source": "T2w", "metric": metric, "class": "mean",
             "mean": value if metric == "dice" else 0.5, "sd": 0.0, "n": 2}
            for method, value in dice.items() for metric in ("dice", "corr")]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_spread_and_the_places_both_runs_agree_on(tmp_path):
    a = _summary(tmp_path / "a.csv", {"oracle": 0.74, "invert": 0.744, "midiffusion": 0.724, "none": 0.25,
                                      "histmatch": 0.26})
    b = _summary(tmp_path / "b.csv", {"oracle": 0.75, "invert": 0.747, "midiffusion": 0.716, "none": 0.27,
                                      "histmatch": 0.26})
    out = tmp_path / "spread.md"
    printed = subprocess.run([sys.executable, SCRIPT, a, b, "--out-md", out], check=True, capture_output=True,
                             text=True).stdout
    text = out.read_text()
    assert text.strip() == printed.strip()
    table = pd.read_csv(out, sep="|", skipinitialspace=True, skiprows=[1], nrows=5).iloc[:, 1:-1]
    table.columns = table.columns.str.strip()
    rows = table.assign(method=table["method"].str.strip()).set_index("method")
    assert rows.loc["midiffusion", "difference"] == pytest.approx(-0.008)
    # The oracle is a bound: rank 0 in both. The first two roads agree, then histmatch and none swap.
    assert rows.loc["oracle", ["rank run A", "rank run B"]].tolist() == [0, 0]
    assert rows.loc["none", ["rank run A", "rank run B"]].tolist() == [4, 3]
    assert "Largest difference 0.020" in text and "icbm152_2009a T2w: 2." in text


def test_a_table_that_is_not_a_summary_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"method": ["invert"], "dice": [0.7]}).to_csv(bad, index=False)
    result = subprocess.run([sys.executable, SCRIPT, bad, bad], capture_output=True, text=True)
    assert result.returncode != 0 and "bad.csv: not a summary.csv" in result.stderr
    assert "Traceback" not in result.stderr
