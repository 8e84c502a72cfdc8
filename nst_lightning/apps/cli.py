"""Entry point: ``python -m nst_lightning key=value ...`` (Hydra; add ``-m`` for sweeps)."""

from __future__ import annotations

import logging
import math
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from nst_lightning.apps import sweeps
from nst_lightning.apps.presets import register_configs
from nst_lightning.config.schema import Config, conf_dir
from nst_lightning.util import folders, interrupts, ranks
from nst_lightning.util.errors import NSTError, first_line, full_error, user_error

log = logging.getLogger("nst_lightning")
register_configs()


def sweep_tensorboard(hc: DictConfig) -> tuple[Path | None, str | None]:
    """In a multirun: one TensorBoard folder for the whole sweep, each run named by its swept keys.

    The swept keys are the sweep overrides of the command line and the preset's sweeper params, read
    back from the sweep's multirun.yaml; a run's name is its own values of those keys, e.g.
    ``ratio=1e-3,content_layer=conv4_2``.
    """
    if hc.mode != RunMode.MULTIRUN:
        return None, None
    sweep_dir = Path(hc.sweep.dir)
    swept = sweeps.swept_keys(sweep_dir)
    job = OverridesParser.create().parse_overrides(list(hc.overrides.task))
    parts = [f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in job if o.get_key_element() in swept]
    name = ",".join(parts).replace("/", "_") or f"job{hc.job.num}"
    return sweep_dir / "tensorboard", name


def _kept(run_dir: Path) -> str:
    """The closing line of an interrupted run: which images it kept, and whether it can be resumed."""
    results = sorted(p for p in run_dir.rglob("result.png") if "snapshots" not in p.parts) if run_dir.is_dir() else []
    if not results:
        return f"interrupted before the first step: no image to keep (the run folder {run_dir} holds only its logs)"
    kept = f"interrupted: kept the image so far in {', '.join(map(str, results))}"
    if (run_dir / "last.ckpt").is_file():
        return f"{kept}; continue with resume={run_dir}"
    return f"{kept} (no last.ckpt: a second Ctrl-C does not wait for the step to end, so this run cannot be resumed)"


def _exit_code(exc: BaseException | None) -> int:
    """128 + the signal: 143 for SIGTERM, 130 for Ctrl-C (a plain KeyboardInterrupt too)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def _interrupted(run_dir: Path, exc: BaseException | None = None) -> NoReturn:
    log.warning("%s", _kept(run_dir))
    sys.exit(_exit_code(exc))


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt an error was raised while handling, if any: a library's clean-up that fails after a
    Ctrl-C (Lightning's, when the signal lands while the Trainer sets up its data) is the Ctrl-C's doing."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _failed_job(run_dir: Path, hc: DictConfig, exc: BaseException, bad_input: bool) -> float:
    """A failed sweep job: its folder gets the ``failed`` marker; a job-specific error returns NaN (the sweep
    carries on), an error that would hit every job ends the sweep now (exit code 2)."""
    text = f"error: {exc}" if bad_input else f"{first_line(exc)}\n\n{traceback.format_exc()}"
    sweeps.record_failure(run_dir, text)
    if bad_input:
        keys = sweeps.swept_keys(hc.sweep.dir)
        if not sweeps.job_specific(str(exc), sweeps.job_values(list(hc.overrides.task), keys)):
            user_error(exc)  # the same error would hit every job: stop now
        log.error("error: %s", exc)
    else:
        log.exception("job %s crashed: %s", hc.job.num, first_line(exc))
    log.error("job %s failed (marker: %s); the sweep carries on", hc.job.num, run_dir / folders.FAILED)
    return math.nan


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _app(cfg: DictConfig) -> float:
    """Run one style transfer in Hydra's run directory; return the final total loss (for sweepers; NaN for a
    failed sweep job)."""
    interrupts.check()  # a signal while Hydra composed: before seconds of imports
    # heavy imports after Hydra has parsed the command line
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from nst_lightning.engine.run import run

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    try:
        interrupts.check()  # a Ctrl-C while torch and Lightning loaded
        if sweep:
            _job_devices(cfg, hc)
        elif ranks.launched_rank() == 0:  # claimed already by sweeps.ClaimFolder: this is a no-op then
            folders.claim(run_dir, "hydra.run.dir")  # a sweep's jobs are inside its claimed folder
        tensorboard_dir, run_name = sweep_tensorboard(hc)
        metrics = run(plan(cfg), run_dir, tensorboard_dir, run_name, overrides=list(hc.overrides.task))
        if metrics.get("interrupted") and not metrics.get("resumable", True):  # its checkpoint did not fit
            log.warning("stopped early: result.png holds the image so far; without last.ckpt it cannot be resumed")
            sys.exit(143 if metrics.get("stopped_by") == "SIGTERM" else 130)
        if metrics.get("interrupted"):
            log.warning("stopped early: result.png holds the image so far; continue with resume=%s", run_dir)
            sys.exit(143 if metrics.get("stopped_by") == "SIGTERM" else 130)
        if (late := interrupts.take()) is not None:  # it came while the finished run wrote its results
            log.warning("%s after the run had finished: its results are complete", signal.Signals(late).name)
            sys.exit(128 + late)
    except SIGTERMException:
        log.error("stopped by SIGTERM: the image so far is saved as result.png (metrics.json: interrupted)")
        sys.exit(143)
    except KeyboardInterrupt as exc:  # a signal while starting up, or a second Ctrl-C outside Lightning's loop
        _interrupted(run_dir, exc)
    except SystemExit as exc:
        if type(exc) is SystemExit and exc.code == 1:  # Lightning's own exit after a KeyboardInterrupt in fit
            _interrupted(run_dir)
        raise
    except (NSTError, MisconfigurationException) as exc:
        if sweep and not full_error():
            return _failed_job(run_dir, hc, exc, bad_input=True)
        user_error(exc)
    except Exception as exc:
        if (interrupt := _interrupt_behind(exc)) is not None and not full_error():
            _interrupted(run_dir, interrupt)
        if sweep and not full_error():
            return _failed_job(run_dir, hc, exc, bad_input=False)
        raise
    if ranks.launched_rank() == 0:
        (run_dir / folders.FAILED).unlink(missing_ok=True)  # an earlier attempt's marker no longer describes it
    return metrics["loss_total"]


def _job_devices(cfg: DictConfig, hc: DictConfig) -> None:
    """A sweep's job: on one device (Lightning's ``ddp`` would start the whole sweep again for each rank); with
    hydra/launcher=joblib on a machine with several GPUs, its own GPU rather than the first."""
    import torch

    from nst_lightning.engine import distributed

    if distributed.world_size(cfg.trainer) > 1:
        raise NSTError(
            "trainer.devices: a sweep's job (-m) runs on one device: use hydra/launcher=joblib to give each job its "
            "own GPU, or share one run's images across the devices with batch_sweep.* instead of -m"
        )
    if "joblib" not in str(OmegaConf.select(hc, "launcher._target_", default="")):
        return
    devices = distributed.joblib_devices(cfg.trainer, int(hc.job.num), torch.cuda.device_count())
    if devices is not None:
        cfg.trainer.devices = devices
        log.info("job %s: GPU %d of %d", hc.job.num, devices[0], torch.cuda.device_count())


def plan(cfg: DictConfig) -> Config:
    """The composed config as the typed plan of a run (its interpolations resolved)."""
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _quoted(value: str) -> str:
    """``value`` as one quoted string of Hydra's override grammar."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "\\'") + "'"


def quoting_hint(override: str, multirun: bool = False) -> str | None:
    """For an override Hydra's grammar cannot read (``content=café.png``: é, 日本, ``=``, ``[`` in a value), the same
    override with its value quoted, if that one reads; else None."""
    key, sep, value = override.partition("=")
    if not sep or not value or value[0] in "'\"":
        return None
    inner = value.lstrip("[{").rstrip("]}") if value[0] in "[{" else value  # a list's own brackets are grammar
    if not any(ord(c) > 127 or c == "=" or c in "[]{}" for c in inner):  # e.g. ratio=[1,2: a syntax error
        return None
    if value.startswith("[") and value.endswith("]"):
        quoted = "[" + ",".join(_quoted(v) for v in value[1:-1].split(",")) + "]"
    elif multirun and "," in value:  # a sweep: quote each value
        quoted = ",".join(_quoted(v) for v in value.split(","))
    else:
        quoted = _quoted(value)
    candidate = f"{key}={quoted}"
    try:
        OverridesParser.create().parse_override(candidate)
    except Exception:
        return None
    return candidate


def check_overrides(argv: list[str]) -> None:
    """Before Hydra: an override its grammar cannot read but could read quoted is refused with one line that
    shows the quoting (Hydra's own message, a lexer error, gives no hint); any other is left to Hydra."""
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except (SystemExit, Exception):
        return
    parser = OverridesParser.create()
    for override in args.overrides:
        try:
            parser.parse_override(override)
        except Exception:
            hint = quoting_hint(override, bool(args.multirun))
            if hint is not None:
                user_error(
                    NSTError(
                        f"cannot read {override}: Hydra's grammar needs a value with characters such as é, 日本, "
                        f'=, [ or spaces in quotes, inside the shell\'s quotes: "{hint}"'
                    ),
                    plain=True,
                )


def asks_for_help(argv: list[str]) -> bool:
    """Whether the command line asks for ``--help`` or ``--hydra-help``."""
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except (SystemExit, Exception):
        return False
    return bool(args.help or args.hydra_help)


def main() -> None:
    """``python -m nst_lightning key=value ...``: the Hydra app, with one-line errors for what Hydra would print as
    a lexer error or a traceback (unreadable overrides, Ctrl-C while starting up), and the run folder released.

    SIGINT and SIGTERM are recorded from the first line on (``python -m`` installs the recorder before this module
    is imported) and acted on at safe points (nst_lightning.util.interrupts); called in-process, the caller's
    handlers are put back at the end."""
    try:
        _main()
    except SystemExit as exc:
        if exc.code in (130, 143) and ranks.helper():
            # Lightning's launcher ends every rank as soon as one exits non-zero: a rank > 0 stopped by a signal
            # leaves rank 0 to finish writing, and the run's exit code to it
            sys.exit(0)
        raise


def _main() -> None:
    ours = not interrupts.installed()
    interrupts.install()
    try:
        check_overrides(sys.argv[1:])
        interrupts.check()
        if asks_for_help(sys.argv[1:]):
            # Hydra composes the config for --help outside its own error report: a bad override would be a
            # traceback there, where the same override without --help is Hydra's short message
            from hydra._internal.utils import run_and_report

            run_and_report(_app)
        else:
            _app()
    except KeyboardInterrupt as exc:
        if full_error():
            raise
        sys.stderr.write("interrupted while starting up or between runs: nothing was being optimised\n")
        sys.exit(_exit_code(exc))
    finally:
        folders.release_all()
        if ours:
            interrupts.uninstall()


if __name__ == "__main__":
    main()
