"""Full and read-only disks, and writers killed mid-write: one atomic writer
(zfnet_cli.files.write_atomic) that cleans up and says what happened in one line."""
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from zfnet_cli import checkpoint, files
from zfnet_cli.cli import app
from zfnet_cli.files import WriteError, write_atomic
from conftest import one_error_line


def _disk_full_for(monkeypatch, needle):
    """Make every write into a temporary file whose name holds ``needle`` fail with ENOSPC."""
    real = files._write

    def write(fd, data):
        if needle in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(files, "_write", write)


def test_full_disk_during_a_checkpoint_save_leaves_nothing_and_says_so(tmp_path, monkeypatch):
    path = checkpoint.save({"w": torch.ones(3)}, tmp_path / "ckpt" / "last.pt")
    _disk_full_for(monkeypatch, ".last.pt.tmp")
    with pytest.raises(WriteError, match="disk full") as err:
        checkpoint.save({"w": torch.zeros(100_000)}, path)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no .tmp left
    torch.testing.assert_close(checkpoint.load(path)["w"], torch.ones(3))  # the old one intact


def test_full_disk_while_training_isone_error_line(smoke, monkeypatch):
    _disk_full_for(monkeypatch, ".last.pt.tmp")
    line = one_error_line(CliRunner().invoke(app, ["train", *smoke]), "disk full", "last.pt")
    assert "output_root" in line
    run = next((Path(smoke[1].split("=", 1)[1]) / "train").glob("20*"))
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_read_only_output_root_isone_error_line(smoke, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    real = Path.mkdir

    def mkdir(self, *a, **kw):
        if str(self).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **kw)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    one_error_line(CliRunner().invoke(app, ["train", *smoke, f"output_root={ro}"]), "read-only")
    one_error_line(CliRunner().invoke(app, ["occlude", f"output_root={ro}"]), "read-only")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder anyway")
def test_chmod_read_only_output_root_isone_error_line(smoke, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error_line(CliRunner().invoke(app, ["train", *smoke, f"output_root={ro}"]), "permission")
    finally:
        ro.chmod(0o755)


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = folder / ".last.pt.tmp-999999999"  # no such process
    dead.write_bytes(b"half a checkpoint")
    alive = folder / f".best.pt.tmp-{os.getppid()}"  # a live writer's: kept
    alive.write_bytes(b"being written")
    write_atomic(folder / "last.pt", b"new")
    assert not dead.exists() and alive.exists()
    assert (folder / "last.pt").read_bytes() == b"new"


def test_resume_removes_the_leftovers_of_the_killed_run(smoke):
    res = CliRunner().invoke(app, ["train", *smoke])
    assert res.exit_code == 0, res.output
    root = Path(smoke[1].split("=", 1)[1])
    first = (root / "train" / "latest").resolve()
    stale = first / "checkpoints" / ".last.pt.tmp-999999999"
    stale.write_bytes(b"x" * 1000)
    res = CliRunner().invoke(app, ["train", *smoke, "resume=latest", "epochs=2"])
    assert res.exit_code == 0, res.output
    assert not stale.exists()


def test_metrics_rows_never_run_ahead_of_the_checkpoint(smoke, monkeypatch):
    """A kill while epoch 2's checkpoint is written: metrics.jsonl must not list epoch 2."""
    from zfnet_cli.experiments import train as experiment_train

    class Killed(BaseException):
        pass
    real = checkpoint.save

    def killed(state, path):
        if state["epoch"] == 2:
            raise Killed  # what a kill leaves: no epoch-2 checkpoint
        return real(state, path)
    monkeypatch.setattr(experiment_train.checkpoint, "save", killed)
    with pytest.raises(Killed):
        CliRunner().invoke(app, ["train", *smoke, "epochs=2"], catch_exceptions=False)
    run = (Path(smoke[1].split("=", 1)[1]) / "train" / "latest").resolve()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and [r["epoch"] for r in rows] == [1]


def test_figures_go_through_the_atomic_writer(tmp_path, monkeypatch):
    """A full disk while a figure (matplotlib or PIL) replaces an earlier one: one line, the
    earlier figure intact, no temporary file left."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from zfnet_cli import viz

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = viz.save_png(fig, tmp_path / "figs" / "curve.png")
    grid = viz._save(Image.new("RGB", (8, 8), (200, 0, 0)), tmp_path / "figs" / "grid.png")
    before = {p.name: p.read_bytes() for p in (png, grid)}
    assert all(b.startswith(b"\x89PNG") for b in before.values())
    _disk_full_for(monkeypatch, ".tmp-")
    with pytest.raises(WriteError, match="disk full") as err:
        viz.save_png(fig, png)
    assert "\n" not in str(err.value)
    with pytest.raises(WriteError, match="disk full"):
        viz._save(Image.new("RGB", (8, 8), (0, 0, 200)), grid)
    plt.close(fig)
    assert {p.name: p.read_bytes() for p in sorted(png.parent.iterdir())} == before
