"""``zfnet layers``: the layers of a model that commands can select, with their output shapes.

A layer is named by its module's qualified name (``layer3.1``, ``features.28``) or, on plain
stacks, by the paper's name (``conv1`` .. ``conv5``, ``fc6``, ``fc7``): see
:mod:`zfnet_cli.layers`. The shapes are those of one image at the model's input size (one
forward pass of a zero image). Nothing is written: the table goes to stdout.
"""
from __future__ import annotations


from zfnet_cli.schemas import LayersConfig
from zfnet_cli.loading import Loaded, load_trained
from zfnet_cli.engine import pick_device
from zfnet_cli.layers import (SCRIPTED, LayerInfo, block_names, default_layer, describe_layers,
                              resolve_layer)


def run(cfg: LayersConfig) -> tuple[Loaded, list[LayerInfo], dict[str, list[str]]]:
    """The model ``cfg`` names, the rows of its layer table (:func:`describe_layers` at the
    model's input size) and what uses each module by default: module name -> ``["--all"]``
    (Fig 2 ``--all`` and ``zfnet explore`` without ``--layer``), ``["occlude (b)"]``
    (occlusion's panel (b) without ``--layer``)."""
    loaded = load_trained(cfg.checkpoint, cfg.output_root, pick_device(cfg.device), source=cfg)
    if loaded.kind == "torchscript":  # compiled: no forward hooks, so no shapes either
        return loaded, [LayerInfo(n, "", getattr(m, "original_name", type(m).__name__), (), 0)
                        for n, m in loaded.model.named_modules() if n], {}
    shape = (3, loaded.input_size, loaded.input_size)
    uses: dict[str, list[str]] = {}
    for name in block_names(loaded.model, shape):
        uses.setdefault(resolve_layer(loaded.model, name).module_name, []).append("--all")
    try:
        panel_b = default_layer(loaded.model, shape).module_name
        uses.setdefault(panel_b, []).append("occlude (b)")
    except ValueError:  # no 4-D output anywhere: occlusion then needs --layer
        pass
    return loaded, describe_layers(loaded.model, shape), uses


def table(loaded: Loaded, rows: list[LayerInfo], uses: dict[str, list[str]] | None = None) -> str:
    """The layer table as text: paper name, module name, type, what reads it by default (see
    :func:`run`), output shape for one image; a module that runs several times in one pass (a
    shared ReLU) is marked, as it cannot be read."""
    uses = uses or {}
    head = ("paper", "module", "type", "default of", "output (C, H, W)")
    lines = []
    for r in rows:
        shape = "x".join(map(str, r.shape)) if r.shape else "-"
        if r.calls > 1:
            shape += f"  (runs {r.calls}x: read its parent)"
        elif r.calls == 0:
            shape = "(not run)" if loaded.kind != "torchscript" else "?"
        lines.append((r.paper_name or "", r.module_name, r.kind,
                      ", ".join(uses.get(r.module_name, [])), shape))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    deconv = loaded.deconv_unavailable
    out = [f"{loaded.name} ({loaded.kind}) from {loaded.source}: input 3x{loaded.input_size}x"
           f"{loaded.input_size}, {len(loaded.classes)} classes, deconvnet: "
           f"{'no (' + deconv + ')' if deconv else 'yes'}",
           fmt.format(*head)]
    if loaded.kind == "torchscript":
        out.insert(1, f"TorchScript: occlusion uses its output only; {SCRIPTED}")
    out += [fmt.format(*l).rstrip() for l in lines]
    return "\n".join(out)
