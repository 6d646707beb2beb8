"""Composing the real configs/ and making run folders."""
import datetime as dt
import json

import pytest

from zfnet_cli.config import ConfigError, compose, make_run_dir, merge_overrides
from zfnet_cli.experiments.train import TrainConfig
from zfnet_cli.model import ModelConfig


def test_default_is_the_small_cpu_run():
    cfg = compose("train")
    assert isinstance(cfg, TrainConfig) and isinstance(cfg.model, ModelConfig)
    assert cfg.model.name == "small" and cfg.data.name == "embedded"
    assert cfg.model.input_size == cfg.data.crop


def test_paper_experiment_is_the_papers_recipe():
    cfg = compose("train", ["experiment=zfnet", "data.root=/x"])
    assert cfg.model == ModelConfig(name="zfnet", input_size=224)  # schema defaults = Fig 3
    assert (cfg.batch_size, cfg.epochs, cfg.optim.lr, cfg.optim.momentum) == (128, 70, 0.01, 0.9)
    assert cfg.optim.renorm and cfg.optim.renorm_rms == 0.1
    assert (cfg.data.image_size, cfg.data.crop, cfg.data.mean) == (256, 224, "image")


def test_overrides_are_typed():
    cfg = compose("train", ["optim.lr=0.5", "model.channels=[4,8,8,8,8]", "model.drop=[fc7]"])
    assert cfg.optim.lr == 0.5 and cfg.model.channels == [4, 8, 8, 8, 8] and cfg.model.drop == ["fc7"]


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean: optim.lr"),
    ("epoch=3", "unknown config key 'epoch' (did you mean: epochs"),
    ("optim.lr=fast", "bad value 'fast' for 'optim.lr': expected float"),
    ("model=resnet", "unknown config choice 'model/resnet'; available: alexnet, small, small_alexnet, tiny, zfnet"),
    ("experiment=huge", "unknown config choice 'experiment/huge'; available: alexnet, paper_small, smoke, zfnet"),
])
def test_bad_overrides_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        compose("train", [override])
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_key_under_a_null_group_is_one_line():
    with pytest.raises(ConfigError) as err:
        compose("occlude", ["data.root=/x"])  # occlude's data is null: the checkpoint's
    assert str(err.value).startswith("cannot set data.root: 'data' is null for `zfnet occlude`")
    assert compose("occlude", ["data=imagenet", "data.root=/x"]).data.root == "/x"


def test_merge_overrides_later_wins():
    assert merge_overrides(["epochs=1", "model=tiny"], ["epochs=3", "seed=2"]) == \
        ["epochs=3", "model=tiny", "seed=2"]


def test_run_folders_are_versioned_and_never_reused(tmp_path):
    cfg = compose("train", [f"output_root={tmp_path}"])
    now = dt.datetime(2026, 1, 2, 3, 4, 5)
    a = make_run_dir("train", cfg, argv=["zfnet", "train"], now=now)
    b = make_run_dir("train", cfg, argv=["zfnet", "train"], now=now)  # the same second
    assert a.name == "2026-01-02_03-04-05" and b.name == "2026-01-02_03-04-05_1"
    assert (tmp_path / "train" / "latest").resolve() == b
    for run in (a, b):
        assert (run / "figures").is_dir()
        assert "epochs:" in (run / "config.yaml").read_text()
        assert (run / "command.txt").read_text() == "zfnet train\n"
        info = json.loads((run / "run.json").read_text())
        assert info["seed"] == cfg.seed and "torch" in info["versions"]
        assert "git_revision" in info


def test_a_failed_run_leaves_no_folder_and_latest_unchanged(tmp_path):
    from zfnet_cli.runs import discard_run_dir

    cfg = compose("train", [f"output_root={tmp_path}"])
    good = make_run_dir("train", cfg, argv=["x"], now=dt.datetime(2026, 1, 1))
    (good / "metrics.json").write_text("{}")
    bad = make_run_dir("train", cfg, argv=["x"], now=dt.datetime(2026, 1, 2))
    discard_run_dir(bad, "boom")
    assert not bad.exists() and (tmp_path / "train" / "latest").resolve() == good
    discard_run_dir(good, "later failure")  # it produced something: kept, error recorded
    assert (good / "metrics.json").exists() and (good / "error.txt").read_text() == "later failure\n"


def test_run_folders_in_creation_order_and_latest_after_a_discarded_run(tmp_path):
    """`_10` is newer than `_9` (a name sort would say otherwise): `latest` after a discarded
    run, `checkpoint=latest` and the report all take run folders in this order."""
    from zfnet_cli.runs import discard_run_dir, run_folders

    names = ["2026-11-22_10-00-00", "2026-11-22_10-00-00_9", "2026-11-22_10-00-00_10"]
    for n in names:
        (tmp_path / n).mkdir()
    (tmp_path / ".latest-123").mkdir()  # a temporary, not a run
    failed = tmp_path / "2026-11-22_10-00-01"
    (failed / "figures").mkdir(parents=True)
    assert [p.name for p in run_folders(tmp_path)] == names + [failed.name]
    discard_run_dir(failed, "bad input")
    assert not failed.exists() and (tmp_path / "latest").readlink().name == names[-1]
    assert run_folders(tmp_path / "missing") == []


def test_yaml_files_hold_only_what_differs_from_the_schema():
    """configs/<command>.yaml sets no key to the value its schema already gives it (a second
    copy of a default drifts from the first); `zfnet config` prints the composed whole."""
    import yaml
    from omegaconf import OmegaConf

    from zfnet_cli.config import COMMANDS, CONFIG_DIR, schema

    def repeats(given: dict, default: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in given.items():
            if isinstance(value, dict) and isinstance(default.get(key), dict):
                out += repeats(value, default[key], f"{prefix}{key}.")
            elif key != "defaults" and key in default and default[key] == value:
                out.append(prefix + key)
        return out

    for command in COMMANDS:
        given = yaml.safe_load((CONFIG_DIR / f"{command}.yaml").read_text())
        default = OmegaConf.to_container(OmegaConf.structured(schema(command)))
        assert repeats(given, default) == [], command


def test_config_command_prints_the_composed_config():
    from typer.testing import CliRunner

    from zfnet_cli.cli import app

    res = CliRunner().invoke(app, ["config", "occlude", "size=32"])
    assert res.exit_code == 0, res.output
    assert "size: 32\n" in res.output and "method: auto\n" in res.output
    assert "checkpoint: latest\n" in res.output
    res = CliRunner().invoke(app, ["config", "train"])
    assert "epochs: 7\n" in res.output and "seed: 0\n" in res.output  # YAML file, then schema


def test_schema_rule_choices_are_the_projection_rules():
    """The schemas bound `rule=` by the rules' names without importing the deconvnet (which
    loads torch); the names must stay those of zfnet_cli.deconv_graph.RULES."""
    from zfnet_cli.deconv_graph import RULES
    from zfnet_cli.schemas import RULE_NAMES

    assert RULE_NAMES == tuple(RULES)
