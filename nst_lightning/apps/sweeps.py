"""Sweeps and run folders, on Hydra's side.

- ``ClaimFolder``, a Hydra callback (``hydra.callbacks`` in conf/config.yaml), checks and claims the run folder
  (``hydra.run.dir``) or the sweep folder (``hydra.sweep.dir``) in ``on_run_start``/``on_multirun_start``: before
  Hydra writes ``.hydra/`` or ``multirun.yaml`` there, so a refused run leaves the folder exactly as it was.
- A sweep job that fails writes a ``failed`` marker (the error text) into its folder; ``ClaimFolder`` ends the
  sweep with one line counting them (``job_specific`` decides which errors let a sweep carry on).
- ``pid`` is an OmegaConf resolver (``${pid:}``: this process's id) that makes the default folder names unique
  when two runs start within the same second.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from nst_lightning.util.errors import NSTError, user_error
from nst_lightning.util.files import atomic_write
from nst_lightning.util.folders import FAILED, claim_new, release, unusable
from nst_lightning.util.ranks import helper


def _register_resolvers() -> None:
    # use_cache: the value is computed once per config, and Hydra copies that cache into each job's config,
    # so a sweep's job processes (joblib, SLURM) see the launching process's id, as they see its ${now:}.
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)


_register_resolvers()


def swept_keys(sweep_dir: str | Path) -> set[str]:
    """The keys a sweep varies: its sweep overrides and the preset's sweeper params, from its multirun.yaml."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    record = Path(sweep_dir) / "multirun.yaml"
    if not record.is_file():
        return set()
    hydra_node = OmegaConf.load(record).hydra
    params = [f"{k}={v}" for k, v in (hydra_node.sweeper.get("params") or {}).items()]
    is_sweep: dict[str, bool] = {}  # the command line comes after the preset's params and wins
    for o in OverridesParser.create().parse_overrides(params + list(hydra_node.overrides.task)):
        is_sweep[o.get_key_element()] = o.is_sweep_override()
    return {key for key, sweep in is_sweep.items() if sweep}


def job_values(overrides: list[str], keys: set[str]) -> dict[str, str]:
    """This job's value (as text) of each swept key, from its overrides (``hydra.overrides.task``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values = {}
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if o.get_key_element() in keys:
            value = o.value()
            values[o.get_key_element()] = value if isinstance(value, str) else o.get_value_element_as_str()
    return values


def job_specific(message: str, swept: dict[str, str]) -> bool:
    """Whether an error is this job's own (the sweep carries on) rather than one that hits every job (it stops).

    The rule: the error line names a key the sweep varies (``ratio=-1.0 is not valid``, ``content image ...``) or
    contains this job's value of one (``'/missing.png'``, ``'conv9_9'``; values of 3 characters or more that are
    not plain numbers). An error that names only keys the sweep does not vary (an unknown layer in a sweep over
    ratios, a missing image every job uses) would fail every job the same way.
    """
    for key, value in swept.items():
        if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message):
            return True
        if len(value) >= 3 and not re.fullmatch(r"[-+.\deE]+", value) and value in message:
            return True
    return False


def record_failure(folder: str | Path, text: str) -> Path:
    """Write the ``failed`` marker (the error text) into a sweep job's folder, atomically."""
    return atomic_write(Path(folder) / FAILED, lambda f: f.write(text.rstrip("\n").encode() + b"\n"))


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: those with Hydra's .hydra/hydra.yaml (a batched sweep's image subfolders have
    only config.yaml and overrides.yaml)."""
    return sorted(p.parent.parent for p in sweep_dir.rglob("hydra.yaml") if p.parent.name == ".hydra")


def sweep_summary(sweep_dir: Path) -> tuple[str, int] | None:
    """The closing line and exit code of a sweep with failed jobs (2: all bad input, 1: some crashed), or None."""
    jobs = sweep_jobs(sweep_dir)
    failed = [job for job in jobs if (job / FAILED).is_file()]
    if not failed:
        return None
    crashed = any(not (job / FAILED).read_text(errors="replace").startswith("error: ") for job in failed)
    names = [str(job) for job in failed[:10]] + ([f"... ({len(failed) - 10} more)"] if len(failed) > 10 else [])
    return f"{len(failed)} of {len(jobs)} jobs failed: {', '.join(names)}", 1 if crashed else 2


def quiet_helper(config: DictConfig) -> None:
    """The job logging of a rank > 0 (Lightning's launcher runs the command again for it, into rank 0's run folder):
    no log file (nothing of it in the run folder) and only errors on the console (rank 0 speaks for the run)."""
    logging = config.hydra.job_logging
    with read_write(logging), open_dict(logging):
        handlers = logging.get("handlers") or {}
        files = [name for name, handler in handlers.items() if "filename" in handler]
        for name in files:
            del handlers[name]
        for handler in handlers.values():
            handler.level = "ERROR"
        for node in [logging.get("root") or {}, *(logging.get("loggers") or {}).values()]:
            if "handlers" in node:
                node.handlers = [name for name in node.handlers if name not in files]


class ClaimFolder(Callback):
    """Hydra callback: check and lock the run or sweep folder before Hydra writes into it; close a sweep with the
    count of its failed jobs (exit code 2, or 1 if a job crashed) instead of the exit code 0 of a clean sweep."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if helper():  # a rank > 0 of a run on several devices: rank 0 holds the folder and writes in it
            quiet_helper(config)
            return
        self._claim(config, "hydra.run.dir", sweep=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "hydra.sweep.dir", sweep=True)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(str(OmegaConf.select(config, "hydra.run.dir")))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        release(sweep_dir)
        summary = sweep_summary(sweep_dir)
        if summary is not None:
            line, code = summary
            sys.stderr.write(f"error: {line}\n")  # the sweep's last line, as plain as a run's one-line error
            sys.exit(code)

    @staticmethod
    def _claim(config: DictConfig, key: str, sweep: bool) -> None:
        try:
            folder = Path(str(OmegaConf.select(config, key)))
            claim_new(folder, key, sweep=sweep)
        except NSTError as exc:
            user_error(exc, plain=True)
        except OSError as exc:  # Hydra turns a callback's exception into a warning, and the run would go on unclaimed
            user_error(unusable(folder, key, exc), plain=True)
