"""The config in one place: schema defaults, typed sections checked at workflow start, paper.yaml complete."""

import os
import subprocess
import sys
from dataclasses import fields

import pytest
import yaml

from conftest import BIN, ROOT, snakemake
from midiffusion import cli, methods
from midiffusion.baselines import BASELINES
from midiffusion.config import DiffusionConfig, SamplingConfig, check_config, defaults, schema
from midiffusion.io import InputError


def filled(**sections) -> dict:
    """A workflow config: the schema's defaults with some sections overridden."""
    config = {name: defaults(name) for name, spec in schema()["properties"].items() if "properties" in spec}
    config |= {"methods": list(methods.METHOD_ORDER), "figure_subject": None}
    for name, values in sections.items():
        config[name] = {**config[name], **values}
    return config


def test_dataclass_defaults_are_the_schema_defaults():
    """Would catch a default written twice (a dataclass field or argparse) drifting from the schema."""
    assert DiffusionConfig() == DiffusionConfig.from_dict(defaults("diffusion"))
    assert SamplingConfig() == SamplingConfig.from_dict(defaults("sampling"))
    assert {f.name for f in fields(DiffusionConfig)} == set(defaults("diffusion")) | {"image_size"}
    assert {f.name for f in fields(SamplingConfig)} == set(defaults("sampling"))
    args = cli.build_parser().parse_args(["preprocess", "--subject", "1", "--target", "T1w", "--image", "T1w=x",
                                          "--out-dir", "o"])
    assert args.percentiles == list(defaults("preprocess")["percentiles"])


@pytest.mark.parametrize("sections, key", [
    ({"preprocess": {"percentiles": [99.5, 0.5]}}, "preprocess.percentiles"),
    ({"sampling": {"n_samples": 0}}, "sampling.n_samples"),
    ({"sampling": {"steps": -3}}, "sampling.steps"),
    ({"diffusion": {"cond_dropout": 1.0}}, "diffusion.cond_dropout"),
    ({"data": {"sources": ["T1w", "T2w"]}}, "data.sources"),
    ({"data": {"subjects": ["01", "O2"]}}, "data.subjects"),
    ({"supervised_bound": {"sources": ["FLAIR", "T2starw"]}}, "supervised_bound.sources"),
    ({"diffusion": {"cond_dropout": 0.0}}, "diffusion.cond_dropout"),  # guidance_scale 5 needs dropout
    ({"slices": {"size": 48}}, "diffusion.attention_resolutions"),  # the default's [16] is not a 48 grid's size
    ({"slices": {"size": 72}, "diffusion": {"channel_mults": [1, 2, 2, 2, 2]}}, "diffusion.image_size"),
])
def test_check_config_names_the_bad_key(sections, key):
    """Would catch a bad value that today only fails (or silently misbehaves) hours later in its rule."""
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        check_config(filled(**sections), subjects=["01", "02"])


def test_check_config_rejects_unknown_methods():
    config = filled()
    config["methods"] = ["oracle", "midifusion"]
    with pytest.raises(InputError, match="midifusion"):
        check_config(config)


def test_workflow_stops_in_seconds_on_a_bad_value(tmp_path):
    """The typed check runs when the workflow starts, before any job: reversed percentiles."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"preprocess": {"percentiles": [99.5, 0.5]}}))
    result = snakemake(tmp_path, "--dry-run", configfile=bad, check=False)
    assert result.returncode != 0 and "preprocess.percentiles" in result.stdout + result.stderr


def test_paper_config_writes_out_every_diffusion_and_sampling_key():
    """Would catch paper.yaml silently inheriting a default-run setting (a new key added to the schema)."""
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    for section in ("slices", "diffusion", "sampling"):
        assert set(paper[section]) == set(defaults(section)), section
    DiffusionConfig.from_dict({**paper["diffusion"], "image_size": paper["slices"]["size"]})
    SamplingConfig.from_dict(paper["sampling"])
    assert paper["diffusion"]["cond_dropout"] == 0 and "unguided" not in paper["methods"]


def test_registry_is_what_the_cli_and_baselines_offer():
    """Would catch a method added in one place only (registry, baseline functions, CLI choices)."""
    assert set(BASELINES) == set(methods.producers("target") + methods.producers("map"))
    assert {m.producer for m in methods.REGISTRY} == set(methods.PRODUCERS)
    assert {m.segmenter for m in methods.REGISTRY} == set(methods.SEGMENTERS)
    parser = cli.build_parser()
    translate = parser.parse_args(["translate", "--model", "m", "--mask", "k", "--out", "o", "--method", "unguided"])
    assert translate.method == "unguided"
    with pytest.raises(SystemExit):
        parser.parse_args(["translate", "--model", "m", "--mask", "k", "--out", "o", "--method", "histmatch"])
    assert methods.case_name("unguided", "01", "T2w") == "sub-01"
    assert methods.case_name("midiffusion", "01", "T2w") == "sub-01_T2w"


def test_dry_run_imports_no_torch(tmp_path):
    """`snakemake -n` parses the DAG without torch: a torch that cannot be imported must not matter."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch imported while parsing the workflow')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    command = [str(BIN / "snakemake"),
               "--snakefile", str(ROOT / "workflow/Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(ROOT / "config/ci.yaml"), "--dry-run"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch imported" not in result.stdout + result.stderr


def test_rival_trainers_take_the_target_schedule():
    """Would catch a rival nnU-Net trained on another budget than the target's (an unfair comparison)."""
    assert methods.trainer_name("strong_aug", "nnUNetTrainer_midiffusion_quick") == "nnUNetTrainerDA5_midiffusion_quick"
    assert methods.trainer_name("domain_rand", "nnUNetTrainer") == "nnUNetTrainerDomainRand"
    assert methods.trainer_name("target", "MyTrainer") == "MyTrainer"
    with pytest.raises(InputError, match="nnunet.trainer"):
        methods.trainer_name("strong_aug", "MyTrainer")
    with pytest.raises(InputError, match="nnunet.trainer"):
        check_config(filled(nnunet={"trainer": "MyTrainer"}))


def test_rival_schedule_gives_the_rivals_their_own_budget_and_leaves_the_target_its():
    quick, own = "nnUNetTrainer_midiffusion_quick", "_midiffusion_verylong"
    assert methods.trainer_name("domain_rand", quick, own) == "nnUNetTrainerDomainRand_midiffusion_verylong"
    assert methods.trainer_name("strong_aug", "MyTrainer", own) == "nnUNetTrainerDA5_midiffusion_verylong"
    assert methods.trainer_name("target", quick, own) == quick
    check_config(filled(nnunet={"trainer": "MyTrainer", "rival_schedule": own}))  # the rivals need no suffix of it


@pytest.mark.parametrize("experiment", sorted((ROOT / "experiments").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_experiment_is_a_valid_override_of_the_default(experiment):
    """Would catch an experiment file whose key was renamed or removed from the schema, or whose
    values no longer pass the workflow's checks: it would only fail when someone runs it."""
    import jsonschema

    override = yaml.safe_load(experiment.read_text()) or {}
    config = filled(**{section: values for section, values in override.items() if isinstance(values, dict)})
    jsonschema.validate(config, schema())
    check_config(config)


def test_cpu_bfloat16_is_on_off_or_decided_by_the_cpu():
    from midiffusion.diffusion.model import build_model, native_cpu_bfloat16

    tiny = dict(image_size=16, base_channels=8, channel_mults=(1, 2), attention_resolutions=(8,), num_res_blocks=1)
    assert DiffusionConfig().cpu_bfloat16 == "auto"
    assert build_model(DiffusionConfig(**tiny)).cpu_bfloat16 == native_cpu_bfloat16()
    for setting in (True, False):
        assert build_model(DiffusionConfig.from_dict({**tiny, "cpu_bfloat16": setting})).cpu_bfloat16 is setting
    with pytest.raises(InputError, match="cpu_bfloat16 = 'yes' is not true, false or auto"):
        DiffusionConfig.from_dict({"cpu_bfloat16": "yes"})


def test_the_workflow_profile_wakes_the_scheduler_rarely_at_snakemakes_rate():
    # Every finished job adds a chain of scheduler wake-ups one timespan apart (docs/hardware.md).
    from snakemake.settings.types import MaxJobsPerTimespan

    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "default" / "config.yaml").read_text())
    limit = MaxJobsPerTimespan.parse_choice(profile["max-jobs-per-timespan"])
    assert limit.timespan >= 10 and limit.max_jobs / limit.timespan >= 100
    assert profile["rerun-incomplete"] is True


def test_nnunet_training_takes_its_seed_and_augmentation_workers_and_prediction_its_own_workers(tmp_path):
    """Would catch nnunet.seed or nnunet.augmentation_processes not reaching the training jobs."""
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"nnunet": {"seed": 7, "augmentation_processes": 3}}))
    command = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "workflow/Snakefile"), "--directory", str(tmp_path),
               "--dry-run", "--printshellcmds", "--configfile", str(ROOT / "config/ci.yaml"), str(override)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line.removeprefix("Shell command: ") for line in (result.stdout + result.stderr).splitlines()]
    training = [command for command in commands if command.startswith("midiffusion nnunet-train")]
    prediction = [command for command in commands if command.startswith("midiffusion nnunet-predict")]
    assert len(training) == 3 and all("--num-processes 3 " in c and "--seed 7 " in c for c in training)
    assert prediction and all("--num-processes 0 " in c for c in prediction)  # ci.yaml's num_processes
