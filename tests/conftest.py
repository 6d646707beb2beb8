
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
