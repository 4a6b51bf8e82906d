"""scripts/benchmark_compute.py on the ci config: one row per config, appended, with sane numbers."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def test_rows_are_appended_with_the_configs_sampler(tmp_path):
    out = tmp_path / "compute.csv"
    command = [sys.executable, ROOT / "scripts/benchmark_compute.py", "--configs", ROOT / "config/ci.yaml",
               "--train-steps", "2", "--device", "cpu", "--out", out]
    for _ in range(2):
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    table = pd.read_csv(out)
    assert len(table) == 2 and table["device"].str.endswith("cpu").all()
    row = table.iloc[-1]
    # ci.yaml: DDIM 3 steps with guidance 2 -> conditional and unconditional call per step.
    assert (row["sampler"], row["sampling_steps"], row["network_calls"]) == ("ddim", 3, 6)
    assert row["image_size"] == 16 and row["parameters"] > 0
    assert row["train_s_per_step"] > 0 and row["sample_s_per_slice"] > 0
