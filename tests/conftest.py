import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing when pytest and DataLoader workers share them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def smoke(tmp_path):
    """Overrides that put a smoke run's outputs and cache under tmp_path."""
    return ["experiment=smoke", f"output_root={tmp_path / 'outputs'}",
            f"data.cache_dir={tmp_path / 'cache'}"]
