"""The zfnet command through Typer's CliRunner: help, one-line errors, a smoke run."""
import json

from typer.testing import CliRunner

from zfnet_cli.cli import app

runner = CliRunner()


def test_top_level_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    assert "train" in res.output and "KEY=VALUE" in res.output


def test_train_help_explains_options_and_shows_examples():
    res = runner.invoke(app, ["train", "--help"])
    assert res.exit_code == 0
    for opt in ("--epochs", "--batch-size", "--lr", "--model", "--data", "--resume", "--device"):
        assert opt in res.output
    assert "torchrun" in res.output and "experiment=zfnet" in res.output


def test_unknown_key_is_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["train", "optim.lrr=0.1", f"output_root={tmp_path}"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("zfnet train: error: unknown config key 'optim.lrr' (did you mean: optim.lr")
    assert not (tmp_path / "train").exists()  # nothing made for a run that never started


def test_bad_value_is_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["train", "epochs=many", f"output_root={tmp_path}"])
    assert res.exit_code == 2
    assert res.output.strip() == "zfnet train: error: bad value 'many' for 'epochs': expected integer"


def test_missing_imagenet_root_names_the_layout(tmp_path):
    res = runner.invoke(app, ["train", "experiment=smoke", "data=imagenet", f"data.root={tmp_path / 'nope'}",
                              f"output_root={tmp_path}"])
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1 and "ROOT/{train,val}/<wnid>" in res.output
    assert "Traceback" not in res.output


def test_resume_without_runs_is_one_line(tmp_path):
    res = runner.invoke(app, ["train", "experiment=smoke", "--resume", "latest", f"output_root={tmp_path}"])
    assert res.exit_code == 1 and "run `zfnet train` first" in res.output


def test_train_smoke_through_the_cli(smoke, tmp_path):
    res = runner.invoke(app, ["train", "--epochs", "1", "--seed", "3", *smoke])
    assert res.exit_code == 0, res.output
    run = (tmp_path / "outputs" / "train" / "latest").resolve()
    assert f"results in {run}" in res.output
    assert "seed: 3" in (run / "config.yaml").read_text()
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1


def test_help_imports_no_torch_nor_an_experiment():
    """`zfnet --help` and each command's --help answer without importing torch, hydra or an
    experiment (they cost seconds; a question about the options should not)."""
    import subprocess
    import sys

    from zfnet_cli.config import COMMANDS

    probe = ("import sys\nfrom zfnet_cli import cli\nfor argv in {argvs!r}:\n"
             "    sys.argv = ['zfnet', *argv]\n    try:\n        cli.main()\n"
             "    except SystemExit:\n        pass\n"
             "heavy = [m for m in sys.modules if m in ('torch', 'hydra', 'omegaconf', 'numpy')"
             " or m.startswith('zfnet_cli.experiments')]\nprint('HEAVY', heavy)")
    argvs = [["--help"]] + [[c, "--help"] for c in (*COMMANDS, "config")]
    out = subprocess.run([sys.executable, "-c", probe.format(argvs=argvs)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Examples:") == len(COMMANDS) + 1  # every command's help was printed
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


# command -> (its arguments before the overrides, a misspelt key, a bad value)
_BAD_OVERRIDES = {
    "train": ([], "optim.lrr=1", "optim.lr=abc"),
    "visualize": ([], "maps_per_layr=2", "k=0"),
    "occlude": ([], "sizee=8", "size=abc"),
    "invariance": ([], "n_image=2", "n_images=0"),
    "correspond": ([], "draw=1", "draws=x"),
    "ablate": ([], "seed=2", "seeds=0"),
    "transfer": ([], "fold=2", "folds=x"),
    "report": ([], "titel=x", "root=[1,2]"),
    "prepare": (["imagenet", "."], "shard=1", "image_size=0"),
    "layers": ([], "devic=cpu", "device=gpu"),
    "explore": ([], "max_unit=1", "k=x"),
}


def test_a_bad_override_answers_before_torch_loads():
    """A misspelt key or a bad value is one `error:` line and exit 2 from every command, given
    before torch or the command's experiment is imported (the schemas import neither), so the
    user does not wait seconds for it."""
    import subprocess
    import sys

    from zfnet_cli.config import COMMANDS

    assert set(_BAD_OVERRIDES) == set(COMMANDS)
    cases = [[c, *args, o] for c, (args, *bad) in _BAD_OVERRIDES.items() for o in bad]
    probe = ("import contextlib, io, json, sys\nfrom zfnet_cli import cli\nout = []\n"
             "for argv in {cases!r}:\n    sys.argv = ['zfnet', *argv]\n    err = io.StringIO()\n"
             "    with contextlib.redirect_stderr(err):\n        try:\n            cli.main()\n"
             "            code = 0\n        except SystemExit as e:\n            code = e.code\n"
             "    heavy = [m for m in sys.modules if m == 'torch'"
             " or m.startswith('zfnet_cli.experiments')]\n"
             "    out.append([argv, code, err.getvalue(), heavy])\nprint(json.dumps(out))")
    run = subprocess.run([sys.executable, "-c", probe.format(cases=cases)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for argv, code, err, heavy in json.loads(run.stdout.strip().splitlines()[-1]):
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1, (argv, code, err)
        assert lines[0].startswith(f"zfnet {argv[0]}: error: "), (argv, err)
        assert heavy == [], (argv, heavy)


def test_each_commands_override_example_composes():
    """The KEY=VALUE example in each command's --help is made of that command's own keys."""
    import re

    import typer.main

    from zfnet_cli.config import COMMANDS, compose

    group = typer.main.get_command(app)
    for name in COMMANDS:
        arg = next((p for p in group.commands[name].params if p.name == "overrides"), None)
        if arg is None:  # the command's positional arguments are files, examples in its epilog
            continue
        example = re.search(r"e\.g\. (.*)\.$", arg.help).group(1)
        keys = [w for w in re.sub(r"\([^)]*\)", "", example).split() if "=" in w]
        assert keys, (name, arg.help)
        compose(name, keys)
