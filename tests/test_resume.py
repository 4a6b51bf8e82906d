"""Killing the workflow during diffusion training and starting it again resumes from the last
checkpoint and redoes no finished job."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, snakemake, user_env

pytestmark = pytest.mark.slow
MODEL = "results/diffusion/model.pt"


def _diffusion_outputs_but_slices(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if Path(folder).name == "diffusion" and n != "train_slices.npz"]


def test_killed_training_resumes_from_checkpoint(tmp_path, ci_run):
    config = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    # about 0.2 s per step: the kill, within a second of the first checkpoint, leaves most of the 80 to do
    config["diffusion"].update(steps=80, checkpoint_every=5)
    configfile = tmp_path / "resume.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    # the ci run's cohort, preprocessing and slices (mtimes kept) without its model: only training is left
    shutil.copytree(ci_run, workdir, ignore=_diffusion_outputs_but_slices)

    first = subprocess.Popen(
        [str(BIN / "snakemake"), "--snakefile", str(ROOT / "workflow/Snakefile"), "--directory", str(workdir),
         "--configfile", str(configfile), "--cores", "2", MODEL],
        env=user_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    checkpoint = workdir / "results/diffusion/checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "training never wrote a checkpoint"
    os.killpg(first.pid, signal.SIGKILL)  # the whole job tree, as a crash or a lost node would
    first.wait()
    assert not (workdir / MODEL).exists(), "training finished before it could be interrupted"
    finished = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file() and "diffusion" not in p.parts}

    snakemake(workdir, "--unlock", configfile=configfile)  # a hard kill leaves the lock behind, as for a user
    second = snakemake(workdir, "--cores", "2", MODEL, configfile=configfile)
    assert "train_diffusion" in second.stderr
    for rule in ("cohort", "preprocess", "slices"):
        assert f"rule {rule}:" not in second.stderr, f"{rule} was redone"
    assert finished == {p: p.stat().st_mtime_ns for p in finished}, "a finished output was rewritten"
    log = (workdir / "logs/train_diffusion.log").read_text()
    start = int(log.rsplit("start_step=", 1)[1].split(",")[0])
    assert start >= 5, f"training restarted from {start}"
    losses = pd.read_csv(workdir / "results/diffusion/loss.csv")
    assert list(losses["step"]) == list(range(1, 81)), "loss.csv has gaps or repeated steps"
