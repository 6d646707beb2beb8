"""zfnet train's evaluation and speed options: ten-crop scoring, eval-only runs, bf16 autocast,
channels_last and torch.compile, all on the CPU (the GPU gains are measured by
scripts/bench_gpu.py; here the code paths must run and give the same numbers)."""
import json
import math

import pytest
import torch
from torch import nn

from zfnet_cli import checkpoint
from zfnet_cli.config import compose, make_run_dir
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.engine import InMemoryBatches, evaluate, train_one_epoch
from zfnet_cli.experiments import train
from zfnet_cli.model import ModelConfig, ZFNet


def _run(overrides):
    cfg = compose("train", overrides)
    run_dir = make_run_dir("train", cfg, argv=["test"])  # as the CLI does: `latest` is this run
    return train.run(cfg, run_dir, overrides=overrides), run_dir


def _tiny(num_classes=5, size=48, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    cfg = ModelConfig(name="tiny", input_size=size, channels=[8, 16, 16, 16, 16], fc_widths=[32, 32],
                      init="kaiming", dropout=dropout)
    return ZFNet(cfg, num_classes)


def _images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


# ---------------------------------------------------------------- ten-crop evaluation

class TopLeftPixel(nn.Module):
    """Two classes from one number, the view's top-left pixel v of channel 0:
    logits (v, 0), so p(class 0) = sigmoid(v)."""

    def forward(self, x):
        v = x[:, 0, 0, 0]
        return torch.stack([v, torch.zeros_like(v)], dim=1)


def test_ten_crop_averages_the_softmax_hand_case():
    # 5x5 image, 3x3 views. The top-left pixels of the ten views are image pixels (row, col):
    # TL (0,0), TR (0,2), BL (2,0), BR (2,2), centre (1,1); mirrored, a view's top-left is its
    # top-right: (0,2), (0,4), (2,2), (2,4), (1,3). Centre pixel +50 (class 0 for sure), the
    # other five pixels -50 (class 1): the centre crop says 0, nine of the ten views say 1.
    image = torch.full((1, 3, 5, 5), 100, dtype=torch.uint8)
    image[0, 0, 1, 1] = 150
    for r, c in [(0, 0), (0, 2), (2, 0), (2, 2), (0, 4), (2, 4), (1, 3)]:
        image[0, 0, r, c] = 50
    mean = torch.full((3, 1, 1), 100.0)
    label = torch.tensor([1])
    one = evaluate(TopLeftPixel(), [(BatchPreprocess(mean, 3, train=False)(image), label)])
    ten = evaluate(TopLeftPixel(), [(BatchPreprocess(mean, 3, train=False, crops=10)(image), label)])
    assert one["top1"] == 0.0 and one["top1_err"] == 100.0
    assert ten["top1"] == 100.0 and ten["top1_err"] == 0.0
    s = torch.sigmoid(torch.tensor(50.0, dtype=torch.float64)).item()
    p1 = ((1 - s) + 9 * s) / 10  # mean over the views of p(class 1)
    assert ten["loss"] == pytest.approx(-math.log(p1), rel=1e-6)  # about -log 0.9
    assert one["loss"] == pytest.approx(50.0, rel=1e-6)  # -log p(1) = -log(1 - sigmoid(50))
    assert ten["top5"] == one["top5"] == 100.0  # k capped at the 2 classes


def test_ten_crop_evaluate_equals_an_independent_loop_and_any_batch_size():
    s, c, n, classes = 56, 48, 7, 5
    model = _tiny(classes, c).eval()
    images, labels = _images(n, s), torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(1))
    mean = torch.rand(3, s, s, generator=torch.Generator().manual_seed(2)) * 255
    # independent: explicit slices of (image - mean), softmax per view, mean of the ten
    x = images.float() - mean
    probs = torch.zeros(n, classes)
    with torch.no_grad():
        for t, l in [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), ((s - c) // 2, (s - c) // 2)]:
            view = x[:, :, t:t + c, l:l + c] * 0.5
            probs += model(view).softmax(1) + model(view.flip(-1)).softmax(1)
    probs /= 10
    top1 = 100 * (probs.argmax(1) == labels).float().mean().item()
    top5 = 100 * (probs.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    loss = -probs[torch.arange(n), labels].log().mean().item()

    pre = BatchPreprocess(mean, c, train=False, scale=0.5, crops=10)
    for batch in (1, 3, 7):
        got = evaluate(model, InMemoryBatches(images, labels, batch, pre, shuffle=False))
        assert got["images"] == n
        assert got["top1"] == pytest.approx(top1) and got["top5"] == pytest.approx(top5)
        assert got["loss"] == pytest.approx(loss, rel=1e-5), batch


def test_ten_crop_batches_hold_ten_times_fewer_images(smoke):
    cfg = compose("train", smoke + ["eval_batch_size=40", "eval_crops=10"])
    pre = BatchPreprocess(torch.zeros(3, 1, 1), 64, train=False, crops=10)
    data = type("D", (), {"images": _images(9, 64), "labels": torch.zeros(9, dtype=torch.long)})()
    batches = train._batches(data, cfg, pre, train=False, epoch=1, d=train.Dist(), workers=0)
    assert [x.shape[:2] for x, _ in batches] == [(4, 10), (4, 10), (1, 10)]  # 40 crops a pass


# ---------------------------------------------------------------- evaluation only

def test_eval_only_reproduces_training_validation_and_saves_nothing(smoke_model, tmp_path):
    root, trained = smoke_model
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    # no experiment=smoke: the composed data (96 px embedded) would not fit the 64 px model,
    # so this passes only if the checkpoint's own data config is used
    metrics, run_dir = _run([f"output_root={tmp_path}", "eval_only=true", f"checkpoint={trained}",
                             "eval_crops=10", "progress=false"])
    one = metrics["val"]["1crop"]
    assert one["top1"] == last["val_top1"] and one["top5"] == last["val_top5"]
    assert one["loss"] == pytest.approx(last["val_loss"], rel=1e-6)
    assert one["top1_err"] == pytest.approx(100 - last["val_top1"])
    assert set(metrics["val"]) == {"1crop", "10crop"} and metrics["val"]["10crop"]["images"] == 40
    assert metrics["checkpoint_epoch"] == 2
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


def test_eval_only_latest_and_data_overrides(smoke):
    _, trained = _run(smoke)
    # `latest` now names this eval run's own folder; it must skip it for the trained run
    metrics, _ = _run(smoke + ["eval_only=true", "data.val_per_class=2"])
    assert metrics["checkpoint"] == str(trained / "checkpoints" / "last.pt")
    assert metrics["val_images"] == 20 and metrics["val"]["1crop"]["images"] == 20  # 10 classes x 2
    _, resumed = _run(smoke + ["resume=latest", "epochs=2"])  # also skips the eval-only folder
    assert checkpoint.load(resumed / "checkpoints" / "last.pt")["epoch"] == 2


@pytest.mark.parametrize("bad, match", [
    (["checkpoint=x.pt"], "eval_only=true"), (["eval_only=true", "resume=latest"], "checkpoint="),
    (["eval_crops=5"], "eval_crops"), (["amp=fp16"], "amp")])
def test_option_errors_are_one_line(smoke, bad, match):
    with pytest.raises(ValueError, match=match):
        _run(smoke + bad)


# ---------------------------------------------------------------- speed options

def _one_step(model, amp="none", channels_last=False, steps=1, renorm=None, seed=3):
    images, labels = _images(8 * steps, 48, seed), torch.arange(8 * steps) % 5
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pre = BatchPreprocess(torch.full((3, 1, 1), 128.0), 48, train=False, scale=1 / 64)
    row = train_one_epoch(model, InMemoryBatches(images, labels, 8, pre, shuffle=False), opt,
                          renorm_rms=renorm, amp=amp, channels_last=channels_last)
    return row["train_loss"], model


def test_bf16_autocast_on_cpu_trains_close_to_fp32():
    fp32, a = _one_step(_tiny())
    bf16, b = _one_step(_tiny(), amp="bf16")
    assert math.isfinite(bf16) and bf16 == pytest.approx(fp32, rel=2e-2)
    assert a.classifier.fc8.weight.dtype == b.classifier.fc8.weight.dtype == torch.float32
    torch.testing.assert_close(b.features.conv1.weight, a.features.conv1.weight, rtol=0, atol=1e-3)


def test_bf16_run_with_ten_crop_validation(smoke):
    metrics, run_dir = _run(smoke + ["amp=bf16", "max_steps=2", "eval_crops=10"])
    assert math.isfinite(metrics["final"]["train_loss"]) and math.isfinite(metrics["final"]["val_loss"])
    assert metrics["amp"] == "bf16" and metrics["val_crops"] == 10
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_crops"] == 10
    assert row["val_top1_err"] == pytest.approx(100 - row["val_top1"])
    assert row["val_top5_err"] == pytest.approx(100 - row["val_top5"])
    assert metrics["best_val_top1_err"] == pytest.approx(100 - metrics["best_val_top1"])


def test_channels_last_gives_the_same_loss_and_weights():
    plain, a = _one_step(_tiny(), steps=2)
    nhwc, b = _one_step(_tiny(), channels_last=True, steps=2)
    assert b.features.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc == pytest.approx(plain, rel=1e-5)
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=k)


def test_compile_cheap_backend_trains_and_saves_plain_keys(smoke):
    over = smoke + ["max_steps=2", "channels_last=true", "compile_backend=eager"]
    _, plain = _run(over)
    torch.compiler.reset()
    metrics, compiled = _run(over + ["compile=true"])
    assert metrics["compile"] and math.isfinite(metrics["final"]["train_loss"])
    state = checkpoint.load(compiled / "checkpoints" / "last.pt")
    reference = ZFNet(checkpoint.model_config(state), state["num_classes"]).state_dict()
    assert list(state["model"]) == list(reference)  # no _orig_mod. prefixes
    assert all(t.is_contiguous() for t in state["model"].values())
    assert "class_names" in state
    other = checkpoint.load(plain / "checkpoints" / "last.pt")["model"]
    for k, t in state["model"].items():
        torch.testing.assert_close(t, other[k], rtol=1e-4, atol=1e-6, msg=k)


def test_renormalisation_reaches_the_parameters_of_a_compiled_model():
    model = _tiny()
    with torch.no_grad():
        model.features.conv1.weight.mul_(100)  # filter RMS far above 0.1
    torch.compiler.reset()  # no cached graphs of ZFNet.forward from other tests
    _one_step(torch.compile(model, backend="aot_eager", dynamic=False), renorm=0.1)  # AOTAutograd, as inductor
    rms = model.features.conv1.weight.flatten(1).pow(2).mean(1).sqrt()
    assert rms.max().item() <= 0.1 + 1e-6


@pytest.mark.slow
def test_ddp_with_every_speed_option(smoke, tmp_path):
    """torch.compile(DDP(model)) with bf16 and channels_last on 2 gloo ranks: both ranks end with
    the same weights and the checkpoint has the plain model's keys."""
    import os
    import subprocess
    import sys

    args = smoke + ["max_steps=2", "amp=bf16", "channels_last=true", "compile=true",
                    "compile_backend=eager", "eval_crops=10"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "zfnet_cli", "train", *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next((tmp_path / "outputs" / "train").glob("20*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(set(metrics["rank_weights_sha1"])) == 1
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert list(state["model"]) == list(ZFNet(checkpoint.model_config(state), state["num_classes"]).state_dict())
