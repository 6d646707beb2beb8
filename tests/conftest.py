
import pytest
import torch

# One torch thread: the tests use tiny models, and on a 2-core machine a second thread that has to
# wait for a busy core (DataLoader workers, the DDP test's processes) slows small ops many times.
torch.set_num_threads(1)


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
