"""The runs below a folder: a plain run's, a sweep's jobs (failed ones included), a batched sweep's images.

A run is a folder holding ``metrics.json`` (or, for a failed job, a file ``failed`` with the error) and the
settings it ran with in ``.hydra/config.yaml``. The report and the metrics find them here, in job order.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nst_lightning.config.derive import flatten_config
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import natural_key

FAILED_MARKER = "failed"


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class Run:
    """One finished run of a sweep."""

    path: Path
    config: dict[str, Any]  # flattened: dotted keys, lists as text
    overrides: list[str]
    metrics: dict[str, Any]
    name: str = ""  # the folder relative to the sweep's, e.g. "3"
    failed: str | None = None  # the error of a failed job (its ``failed`` file), else None


def is_failed_job(folder: Path) -> bool:
    """A job that failed: a ``failed`` file (the error) and no result.png."""
    return (folder / FAILED_MARKER).is_file() and not (folder / "result.png").exists()


def load_run(folder: Path, name: str = "") -> Run:
    failed = None
    if is_failed_job(folder):
        failed = (folder / FAILED_MARKER).read_text(errors="replace").strip() or "failed"
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    else:
        metrics = json.loads((folder / "metrics.json").read_text())
    raw = OmegaConf.load(folder / ".hydra" / "config.yaml")
    try:
        config = OmegaConf.to_container(raw, resolve=True)
    except Exception:  # an interpolation that only Hydra could resolve (${now:...}): keep it as text
        config = OmegaConf.to_container(raw, resolve=False)
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return Run(folder, flatten_config(config), [str(o) for o in overrides], metrics, name or folder.name, failed)


def find_runs(directory: str | Path, finished: bool = False) -> list[Run]:
    """Every run folder at or under ``directory`` (recursively), in job order; ``finished``: only those that
    made a result.png (not the failed jobs)."""
    root = Path(directory)
    example = "python -m nst_lightning -m ratio=1e-2,1e-3"
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise NSTError(f"no runs found in {root}: it {what} (give a sweep's folder, e.g. outputs/multirun/<date_time>)")
    runs = []
    found = {f.parent for f in root.rglob("metrics.json")}
    found |= {f.parent for f in root.rglob(FAILED_MARKER) if f.is_file() and is_failed_job(f.parent)}
    for folder in sorted(found, key=natural_key):
        if not (folder / ".hydra" / "config.yaml").is_file():
            if is_failed_job(folder):
                warn(f"{folder} failed before Hydra wrote its .hydra/config.yaml: it cannot be placed in the grid")
            continue
        try:
            run = load_run(folder, folder.relative_to(root).as_posix())
        except Exception as exc:  # one broken or half-written run should not hide the others
            warn(f"skipping {folder}: cannot read its metrics.json or .hydra/*.yaml ({exc})")
            continue
        if finished and (run.failed or not (folder / "result.png").is_file()):
            continue
        if "batch" not in run.metrics or run.failed:  # a batched sweep's summary: its images are the runs
            runs.append(run)
    # The images of a batched sweep in the order of its lists (their folder names do not sort that way).
    runs.sort(key=lambda run: (natural_key(run.path.parent), run.metrics.get("batch_index", 0)))
    if not runs:
        raise NSTError(
            f"no runs found in {root} (a run folder holds metrics.json and .hydra/config.yaml): "
            f"run a sweep first, e.g. {example}"
        )
    return runs


def same_value(a: Any, b: Any) -> bool:
    return (type(a) is type(b) or (is_number(a) and is_number(b))) and a == b


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def swept_keys(runs: list[Run]) -> list[str]:
    """The config keys whose values differ between runs, in the order the overrides name them."""
    keys = list(dict.fromkeys(k for run in runs for k in run.config))
    differing = [k for k in keys if any(not same_value(r.config.get(k), runs[0].config.get(k)) for r in runs)]
    named: dict[str, int] = {}
    for run in runs:
        for item in run.overrides:
            named.setdefault(item.split("=", 1)[0].lstrip("+~"), len(named))

    def position(key: str) -> int:
        # A group override (network=vgg19_random) names every key below it (network.source).
        hits = [i for name, i in named.items() if key == name or key.startswith(name + ".")]
        return min(hits, default=len(named))

    return sorted(differing, key=position)  # stable: ties keep the config's order
