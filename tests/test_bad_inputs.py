"""Bad inputs of our own beyond the first list of hostile inputs that used to exit 0, end in a traceback or
print a parser message: each is now one line."""
import pytest
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli.cli import app
from zfnet_cli.config import ConfigError, compose


@pytest.mark.parametrize("command,override,words", [
    ("train", "epochs=-3", "epochs=-3"),                      # was: exit 0, an empty run
    ("train", "optim.momentum=1.5", "must be < 1.0"),          # was: exit 0, diverging SGD
    ("train", "model.channels=[0,8,8,8,8]", "model.channels"),  # was: torch RuntimeError traceback
    ("train", "model.num_classes=1", "must be >= 2"),          # was: IndexError traceback
    ("train", "keep_epochs=[0]", "keep_epochs"),               # was: exit 0, never kept
    ("train", "data.scale=0", "must be > 0.0"),                # was: exit 0, all-zero inputs
    ("visualize", "max_images=0", "max_images"),               # was: exit 0, nothing scanned
    ("correspond", "draws=0", "draws"),                        # was: exit 0, NaN table
    ("transfer", "folds=0", "folds"),                          # was: 'few_shot_eval needs ...'
])
def test_values_that_used_to_pass_are_refused(command, override, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace(".", r"\.")):
        compose(command, [override])


def test_more_labels_than_image_files(smoke_model, tmp_path):
    root, _ = smoke_model
    Image.new("RGB", (80, 80), (100, 20, 20)).save(tmp_path / "a.png")
    res = CliRunner().invoke(app, ["invariance", str(tmp_path / "a.png"), "--label", "1",
                                   "--label", "2", f"output_root={root}", "progress=false"])
    assert res.exit_code == 1 and "2 labels for 1 image file" in res.output, res.output


def test_prepare_with_an_override_first_explains_the_argument_order():
    res = CliRunner().invoke(app, ["prepare", "output_root=/tmp/x", "imagenet", "/nowhere"])
    assert res.exit_code == 2 and "DATASET ROOT" in res.output and "mismatched" not in res.output
