"""tools/benchmarks/benchmark_compute.py on the ci config: a row appended to the existing CSV, with sane numbers."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def test_a_row_is_appended_with_the_configs_sampler(tmp_path):
    out = tmp_path / "compute.csv"
    committed = ROOT / "results/benchmarks/compute.csv"
    out.write_text(committed.read_text())  # the rows of earlier runs stay
    subprocess.run([sys.executable, ROOT / "tools/benchmarks/benchmark_compute.py", "--configs",
                    ROOT / "config/ci.yaml", "--train-steps", "2", "--device", "cpu", "--out", out], check=True, capture_output=True, cwd=ROOT)
    table, earlier = pd.read_csv(out), pd.read_csv(committed)
    pd.testing.assert_frame_equal(table.iloc[:-1], earlier)
    row = table.iloc[-1]
    assert row["device"].endswith("cpu")
    # ci.yaml: DDIM 3 steps with guidance 2 -> conditional and unconditional call per step.
    assert (row["sampler"], row["sampling_steps"], row["network_calls"]) == ("ddim", 3, 6)
    assert row["image_size"] == 16 and row["parameters"] > 0 and not row["bfloat16"]
    assert row["train_s_per_step"] > 0 and row["sample_s_per_slice"] > 0
