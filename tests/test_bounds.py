"""One bounds check for typed options and key=value overrides (zfnet_cli.bounds)."""
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from zfnet_cli.bounds import bounded, check_bounds
from zfnet_cli.cli import app
from zfnet_cli.config import ConfigError, compose


def _one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_bounded_fields_hand_cases():
    @dataclass
    class Cfg:
        epochs: int = bounded(3, min=1)
        momentum: float = bounded(0.9, min=0.0, below=1.0)
        amp: str = bounded("none", choices=("none", "bf16"))
        shots: list = bounded(default_factory=lambda: [1, 2], min=1)
        cap: object = bounded(None, min=1)

    check_bounds(Cfg())  # defaults hold; None is "not given"
    with pytest.raises(ValueError, match=r"^epochs=0 is out of bounds: must be >= 1$"):
        check_bounds(Cfg(epochs=0))
    with pytest.raises(ValueError, match=r"momentum=1.0 is out of bounds: must be < 1.0"):
        check_bounds(Cfg(momentum=1.0))
    with pytest.raises(ValueError, match="expected one of none, bf16"):
        check_bounds(Cfg(amp="fp8"))
    with pytest.raises(ValueError, match=r"shots=\[1, 0\]"):
        check_bounds(Cfg(shots=[1, 0]))


@pytest.mark.parametrize("override,key", [
    ("batch_size=0", "batch_size"), ("epochs=0", "epochs"), ("device=banana", "device"),
    ("data.image_size=32", "data.crop"), ("optim.lr=-1", "optim.lr"), ("data.workers=-1", "data.workers"),
    ("eval_batch_size=0", "eval_batch_size"), ("max_steps=0", "max_steps"),
    ("model.dropout=1.5", "model.dropout"), ("data.max_broken=2", "data.max_broken")])
def test_train_overrides_hold_the_bounds(smoke, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose("train", smoke + [override])
    if override in ("batch_size=0", "device=banana", "data.image_size=32"):  # the three first found to escape the bounds
        _one_line_error(CliRunner().invoke(app, ["train", *smoke, override]), key)


def test_typed_option_and_override_give_the_same_line(smoke):
    typed = _one_line_error(CliRunner().invoke(app, ["train", *smoke, "--batch-size", "0"]), "batch_size")
    plain = _one_line_error(CliRunner().invoke(app, ["train", *smoke, "batch_size=0"]), "batch_size")
    assert typed == plain


@pytest.mark.parametrize("command,override,key", [
    ("visualize", "k=0", "k"), ("visualize", "batch_size=0", "batch_size"),
    ("occlude", "size=0", "size"), ("occlude", "stride=0", "stride"),
    ("invariance", "n_images=0", "n_images"), ("correspond", "draws=0", "draws"),
    ("transfer", "folds=0", "folds"), ("transfer", "shots=[5,0]", "shots"),
    ("prepare", "shard_size=0", "shard_size"), ("occlude", "device=banana", "device")])
def test_every_command_holds_its_bounds(command, override, key):
    with pytest.raises(ConfigError, match=key):
        compose(command, [override])


def test_imagenet_workers_default_to_what_the_machine_has(monkeypatch):
    from zfnet_cli.data.images import loader_workers

    cfg = compose("train", ["data=imagenet", "data.root=/nowhere"])
    assert cfg.data.workers is None  # not 8 on a 2-core machine: torch would warn
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader_workers(None) == 2 and loader_workers(5) == 5
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert loader_workers(None) == 8
