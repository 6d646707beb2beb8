"""N DDP processes train as one when the train set is not a multiple of the batch:
both drop the last partial batch (tests/test_train.py::test_ddp_two_ranks_equal_one_process
runs 2 gloo ranks on 70 images in batches of 16), and what cannot work is one line."""
import pytest
import torch

from zfnet_cli import checkpoint
from zfnet_cli.config import compose
from zfnet_cli.engine import Dist
from zfnet_cli.experiments import train as experiment_train


def test_a_global_batch_that_does_not_split_over_the_processes_is_one_line(smoke, tmp_path):
    cfg = compose("train", smoke + ["batch_size=15", f"output_root={tmp_path}"])
    with pytest.raises(ValueError, match="batch_size=15 .* 2 processes"):
        experiment_train.run(cfg, tmp_path, dist_info=Dist(rank=0, world_size=2))


def test_a_batch_larger_than_the_train_set_is_one_line(smoke, tmp_path):
    cfg = compose("train", smoke + ["batch_size=4096", f"output_root={tmp_path}"])
    with pytest.raises(ValueError, match="batch_size=4096 is larger than the"):
        experiment_train.run(cfg, tmp_path)
