"""Bounds of config values, declared once on the dataclass field and checked once.

A field declared with :func:`bounded` carries its limits in ``dataclasses.field`` metadata;
:func:`check_bounds` walks a composed config (nested dataclasses included) and raises one
:class:`ValueError` line naming the first value out of bounds. ``zfnet_cli.config.compose`` calls
it on every composed config, so the typed ``--options`` and ``key=value`` overrides meet the same
check (the options carry no bounds of their own). A dataclass may also define ``check()``, which
names impossible combinations of its values (``data.crop`` larger than ``data.image_size``); it
runs after the bounds of its fields. ``bounded(..., **DEVICE)`` declares a device string.

>>> from dataclasses import dataclass
>>> @dataclass
... class Cfg:
...     epochs: int = bounded(70, min=1)
>>> check_bounds(Cfg(epochs=0))
Traceback (most recent call last):
...
ValueError: epochs=0 is out of bounds: must be >= 1
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

DEVICE = dict(pattern=r"auto|cpu|cuda(:\d+)?|mps", hint="auto, cpu, cuda, cuda:N or mps")


def bounded(default: Any = dataclasses.MISSING, *, min: Optional[float] = None,
            max: Optional[float] = None, above: Optional[float] = None,
            below: Optional[float] = None,
            choices: Optional[Sequence[Any]] = None, pattern: Optional[str] = None,
            hint: Optional[str] = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with bounds: ``min`` <= value <= ``max``, value < ``below``, value in
    ``choices`` or matching ``pattern`` (a full-match regular expression, for strings). ``None``
    (an optional value not given) and list elements are checked the same way: each element of a
    list must hold.

    Args:
        default: the default value (or ``default_factory`` for lists).
        min, max: inclusive numeric bounds. Default: none.
        above, below: exclusive lower and upper bounds. Default: none.
        choices: allowed values. Default: any.
        pattern: regular expression a string value must match in full. Default: any.
        hint: how the error message describes ``pattern``. Default: the pattern itself.

    Returns:
        A ``dataclasses.field`` whose metadata holds the bounds.
    """
    meta = {k: v for k, v in (("min", min), ("max", max), ("above", above), ("below", below),
                              ("choices", tuple(choices) if choices else None),
                              ("pattern", pattern), ("hint", hint)) if v is not None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"bounds": meta})
    return dataclasses.field(default=default, metadata={"bounds": meta})


def _violation(value: Any, b: dict) -> Optional[str]:
    if "choices" in b and value not in b["choices"]:
        return "expected one of " + ", ".join(str(c) for c in b["choices"])
    if "pattern" in b and not re.fullmatch(b["pattern"], str(value)):
        return f"expected {b.get('hint', b['pattern'])}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in b and value < b["min"]:
            return f"must be >= {b['min']}"
        if "max" in b and value > b["max"]:
            return f"must be <= {b['max']}"
        if "above" in b and value <= b["above"]:
            return f"must be > {b['above']}"
        if "below" in b and value >= b["below"]:
            return f"must be < {b['below']}"
    return None


def check_bounds(cfg: Any, prefix: str = "") -> None:
    """Check every :func:`bounded` field of the dataclass ``cfg`` (recursively), then its
    ``check(prefix)`` if it has one (it raises ``ValueError`` naming keys under ``prefix``).
    Fields named in the class attribute ``BOUNDS_FIRST`` are checked before the others.

    Raises:
        ValueError: one line, ``key=value is out of bounds: must be >= 1``, naming the dotted key.
    """
    # A schema may name fields to check first (TrainConfig: data before model, whose
    # input_size follows data.crop), so that the line names the key the user set.
    first = getattr(cfg, "BOUNDS_FIRST", ())
    for f in sorted(dataclasses.fields(cfg), key=lambda f: f.name not in first):
        value = getattr(cfg, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_bounds(value, key + ".")
            continue
        b = f.metadata.get("bounds")
        if not b or value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            why = _violation(v, b)
            if why:
                shown = value if not isinstance(value, (list, tuple)) else list(value)
                raise ValueError(f"{key}={shown} is out of bounds: {why}")
    check = getattr(cfg, "check", None)
    if callable(check):
        check(prefix)
