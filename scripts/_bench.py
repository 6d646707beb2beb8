"""How every benchmark script ends: the folder it writes into and its results there.

``make bench`` runs the scripts one after another with one ``--out`` folder; run alone, a script
makes a new ``<output_root>/bench/<date_time>``. Each writes ``<stem>.json`` and, where it has
one, ``<stem>.md``: a whole table, or one row appended, so that the rows of several runs collect
in one table. Every file is written atomically (a benchmark killed at its time limit leaves the
previous complete file, never half of one).

This lives beside the scripts, not in the package: the package knows nothing of benchmarks
(scripts import ``zfnet_cli``, never the reverse), and these are a few lines over its run folders
(:mod:`zfnet_cli.runs`) and its file writers (:mod:`zfnet_cli.files`). A script run as
``python scripts/bench_x.py`` finds it on ``sys.path`` (the script's own folder).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from zfnet_cli.files import append_text, write_atomic
from zfnet_cli.runs import new_run_dir


def run_folder(out: Optional[str], output_root: str = "outputs") -> Path:
    """``out`` (created if missing), or a new ``<output_root>/bench/<date_time>``."""
    run = Path(out) if out else new_run_dir(Path(output_root), "bench")
    run.mkdir(parents=True, exist_ok=True)
    return run


def write_results(run: Path, stem: str, data: Any = None, markdown: Optional[str] = None, *,
                  append: bool = False) -> Path:
    """Write ``<stem>.json`` (``data``, indented JSON) and ``<stem>.md`` (``markdown``: the whole file,
    or with ``append`` one more row at its end), each only when given.

    Returns:
        The JSON's path (the markdown's without ``data``).
    """
    path = run / f"{stem}.md"
    if markdown is not None:
        (append_text if append else write_atomic)(path, markdown)
    if data is not None:
        path = write_atomic(run / f"{stem}.json", json.dumps(data, indent=2) + "\n")
    return path
