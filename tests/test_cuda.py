"""The CUDA paths, where a GPU is: bf16 autocast, channels_last and torch.compile (inductor)
training steps, ``zfnet train`` with every speed option, NCCL with one process, and the
deconvnet, the top-9 scan and occlusion on the GPU against their CPU results.

Every test here is marked ``cuda`` and skips without a CUDA device, so ``make test`` on a CPU
machine skips them and ``pytest -m cuda`` (what scripts/device_check.sh runs) runs only them.
The CPU tests of the same options are in tests/test_train_options.py.
"""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zfnet_cli import checkpoint
from zfnet_cli.config import compose, make_run_dir
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.deconv import Deconvnet, Request
from zfnet_cli.engine import InMemoryBatches, compile_model, train_one_epoch
from zfnet_cli.experiments import train
from zfnet_cli.model import ModelConfig, ZFNet
from zfnet_cli.occlusion import occlude
from zfnet_cli.top9 import scan_top9

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # input side of the small nets below


@pytest.fixture
def no_tf32():
    """Plain float32 convs and matmuls: by default cuDNN convs run in TF32 (10-bit mantissa), whose
    rounding would swamp the differences these tests look for."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _net(seed=0, classes=7, lrn=True, dropout=0.0) -> ZFNet:
    """ZFNet's topology (LRN after pool1 and pool2, as the paper's) at tiny widths, 64 px."""
    torch.manual_seed(seed)
    cfg = ModelConfig(name="tiny", input_size=SIZE, channels=[8, 16, 16, 16, 16], fc_widths=[32, 32],
                      init="kaiming", dropout=dropout, lrn=lrn)
    return ZFNet(cfg, classes)


def _train(model, *, amp="none", channels_last=False, steps=2, seed=3, hook=None):
    """``steps`` SGD steps of zfnet train's own loop on the GPU; returns (mean loss, model)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (8 * steps, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    labels = torch.arange(8 * steps) % 7
    model = model.cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    pre = BatchPreprocess(torch.full((3, 1, 1), 128.0, device="cuda"), SIZE, train=False, scale=1 / 64)
    batches = InMemoryBatches(images, labels, 8, pre, shuffle=False, device="cuda")
    row = train_one_epoch(model, batches, opt, renorm_rms=0.1, device="cuda", amp=amp,
                          channels_last=channels_last)
    return row["train_loss"], model


def _conv_output(model, name="conv2"):
    """A forward hook that keeps the output of ``features.<name>`` in a list."""
    seen = []
    handle = getattr(model.features, name).register_forward_hook(lambda m, i, o: seen.append(o))
    return seen, handle


# ---------------------------------------------------------------- speed options


def test_bf16_autocast_step_runs_convs_in_bf16_and_stays_close_to_fp32():
    fp32, a = _train(_net())
    model = _net()
    seen, handle = _conv_output(model)
    bf16, b = _train(model, amp="bf16")
    handle.remove()
    assert seen[0].dtype == torch.bfloat16  # the convs really ran in bf16 ...
    assert b.features.conv1.weight.dtype == b.classifier.fc8.weight.dtype == torch.float32  # ... weights did not
    assert math.isfinite(bf16) and bf16 == pytest.approx(fp32, rel=2e-2)
    torch.testing.assert_close(b.features.conv1.weight, a.features.conv1.weight, rtol=0, atol=2e-3)


def test_channels_last_on_cuda_gives_the_same_steps(no_tf32):
    plain, a = _train(_net())
    model = _net()
    seen, handle = _conv_output(model)
    nhwc, b = _train(model, channels_last=True)
    handle.remove()
    assert b.features.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)  # NHWC all the way to conv2
    assert nhwc == pytest.approx(plain, rel=1e-5)
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=k)


def test_compile_inductor_on_cuda_matches_eager_and_renormalises(no_tf32):
    torch.compiler.reset()
    model = _net()
    with torch.no_grad():
        model.features.conv1.weight.mul_(100)  # filter RMS far above 0.1: renormalised each step
    reference = _net()
    with torch.no_grad():
        reference.features.conv1.weight.mul_(100)
    compiled_loss, _ = _train(compile_model(model.cuda(), "inductor"))
    eager_loss, _ = _train(reference)
    assert math.isfinite(compiled_loss) and compiled_loss == pytest.approx(eager_loss, rel=1e-4)
    rms = model.features.conv1.weight.flatten(1).pow(2).mean(1).sqrt()
    assert rms.max().item() <= 0.1 + 1e-6
    for (k, p), q in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5, msg=k)


def test_train_run_on_cuda_with_every_speed_option(smoke):
    """The real config path: zfnet train on the GPU with bf16, channels_last and inductor."""
    over = smoke + ["device=cuda", "max_steps=2", "amp=bf16", "channels_last=true", "compile=true",
                    "compile_backend=inductor", "eval_crops=10"]
    torch.compiler.reset()
    cfg = compose("train", over)
    run_dir = make_run_dir("train", cfg, argv=["test"])
    metrics = train.run(cfg, run_dir, overrides=over)
    assert metrics["amp"] == "bf16" and metrics["channels_last"] and metrics["compile"]
    assert math.isfinite(metrics["final"]["train_loss"]) and math.isfinite(metrics["final"]["val_loss"])
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    reference = ZFNet(checkpoint.model_config(state), state["num_classes"]).state_dict()
    assert list(state["model"]) == list(reference)  # no _orig_mod. prefixes
    assert all(t.is_contiguous() for t in state["model"].values())


# ---------------------------------------------------------------- NCCL, one process

_NCCL = r"""
import datetime, json, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
import tests.test_cuda as t

dist.init_process_group("nccl", init_method="env://", timeout=datetime.timedelta(seconds=45))
torch.cuda.set_device(0)
x = torch.full((4,), 3.0, device="cuda")
dist.all_reduce(x)
plain_loss, plain = t._train(t._net())
ddp = DistributedDataParallel(t._net().cuda(), device_ids=[0])
ddp_loss, _ = t._train(ddp)  # train_one_epoch also all-reduces its sums through NCCL here
diff = max((p - q).abs().max().item() for p, q in zip(plain.parameters(), ddp.module.parameters()))
print(json.dumps({"backend": dist.get_backend(), "world": dist.get_world_size(),
                  "all_reduce": x.tolist(), "plain_loss": plain_loss, "ddp_loss": ddp_loss,
                  "max_weight_diff": diff}))
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_one_process_all_reduce_and_ddp_step():
    """NCCL initialised by env:// on localhost with world size 1 (as torchrun would set it up),
    in a child process with a timeout, so a hang fails this test instead of the whole run."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0",
               WORLD_SIZE="1", LOCAL_RANK="0", PYTHONPATH=os.pathsep.join(
                   [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", _NCCL], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=80)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == "nccl" and out["world"] == 1
    assert out["all_reduce"] == [3.0] * 4
    # one DDP rank averages its gradient with itself: the same step as without DDP
    assert out["ddp_loss"] == pytest.approx(out["plain_loss"], rel=1e-5)
    assert out["max_weight_diff"] < 1e-5


# ---------------------------------------------------------------- instruments: GPU vs CPU
# In float64 the GPU's sums differ from the CPU's only in the last bits, so rankings (top-9,
# the occlusion labels) must agree exactly and values to ~1e-10.


def _images(n=6, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, SIZE, SIZE, generator=g) * 60).to(dtype)


def test_deconv_projections_on_cuda_equal_the_cpu():
    cpu = _net().double().eval()
    gpu = _net().double().eval().cuda()
    images = _images()
    d_cpu, d_gpu = Deconvnet(cpu), Deconvnet(gpu)
    acts = d_cpu.forward(images, upto="conv5", switches=False).activations
    requests = []
    for i, layer in enumerate(d_cpu.layers):
        for image in (i % 6, (i + 3) % 6):  # each image's strongest map and its strongest position
            a = acts[layer][image]  # (C, h, w)
            fmap = int(a.flatten(1).amax(1).argmax())
            y, x = divmod(int(a[fmap].argmax()), a.shape[-1])
            requests += [Request(image, layer, fmap, (y, x)), Request(image, layer, fmap, None)]
    want = d_cpu.project(images, requests, batch_size=4)
    got = d_gpu.project(images, requests, batch_size=4)
    assert got.device.type == "cuda"
    assert want.abs().amax(dim=(1, 2, 3)).min() > 0  # every projection is non-trivial
    torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-9)


def test_deconv_float32_on_cuda_close_to_the_cpu():
    """The dtype used in practice: float32 with cuDNN's defaults (TF32 allowed)."""
    cpu, gpu = _net().eval(), _net().eval().cuda()
    images = _images(dtype=torch.float32)
    requests = [Request(i, layer, i, None) for i, layer in enumerate(Deconvnet(cpu).layers)]
    want = Deconvnet(cpu).project(images, requests)
    got = Deconvnet(gpu).project(images, requests).cpu()
    scale = want.abs().amax(dim=(1, 2, 3), keepdim=True)
    assert ((got - want).abs() / scale).max() < 2e-2  # TF32: ~1e-3 per conv, a few convs deep


def test_top9_scan_on_cuda_equals_the_cpu():
    cpu = _net().double().eval()
    gpu = _net().double().eval().cuda()
    batches = list(_images(n=24, seed=2).split(5))  # a last, partial batch too
    want = scan_top9(cpu, batches, k=9)
    got = scan_top9(gpu, [b.cuda() for b in batches], k=9)
    for layer, w in want.items():
        g = got[layer]
        assert g.values.device.type == "cpu"  # results come back to the CPU
        assert torch.equal(g.images, w.images), layer
        assert torch.equal(g.positions, w.positions), layer
        torch.testing.assert_close(g.values, w.values, rtol=1e-9, atol=1e-9)


def test_occlusion_on_cuda_equals_the_cpu():
    cpu = _net().double()
    gpu = _net().double().cuda()
    image = _images(n=1, seed=3)[0]
    kw = dict(size=16, stride=6, batch_size=7, fill=0.0)  # 7 does not divide the positions
    want = occlude(cpu, image, **kw)
    got = occlude(gpu, image, **kw)
    assert (got.fmap, got.target, got.clean_label) == (want.fmap, want.target, want.clean_label)
    assert torch.equal(got.top_label, want.top_label)
    for name in ("fmap_total", "p_target", "log_p_target"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-9, atol=1e-12,
                                   msg=name)
    assert want.p_target.std() > 0  # the occluder moves the probability: the test can fail
