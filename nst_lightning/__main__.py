"""Entry point: ``python -m nst_lightning key=value ...`` (Hydra; add ``-m`` for sweeps)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from nst_lightning.config import conf_dir, register_configs
from nst_lightning.errors import NSTError

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
    swept: set[str] = set()
    record = sweep_dir / "multirun.yaml"
    if record.is_file():
        hydra_node = OmegaConf.load(record).hydra
        params = [f"{k}={v}" for k, v in (hydra_node.sweeper.get("params") or {}).items()]
        is_sweep: dict[str, bool] = {}  # the command line comes after the preset's params and wins
        for o in OverridesParser.create().parse_overrides(params + list(hydra_node.overrides.task)):
            is_sweep[o.get_key_element()] = o.is_sweep_override()
        swept = {key for key, sweep in is_sweep.items() if sweep}
    job = OverridesParser.create().parse_overrides(list(hc.overrides.task))
    parts = [f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in job if o.get_key_element() in swept]
    name = ",".join(parts).replace("/", "_") or f"job{hc.job.num}"
    return sweep_dir / "tensorboard", name


def user_error(exc: BaseException) -> NoReturn:
    """Bad input (NSTError, Lightning's MisconfigurationException): one ``error: ...`` line and exit 2, no
    traceback; with HYDRA_FULL_ERROR=1 the exception is raised instead. Shared by the entry points."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    log.error("error: %s", exc)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one style transfer in Hydra's run directory; return the final total loss (for sweepers)."""
    from nst_lightning.run import run  # heavy imports after Hydra has parsed the command line

    try:
        hc = HydraConfig.get()
        tensorboard_dir, run_name = sweep_tensorboard(hc)
        metrics = run(cfg, hc.runtime.output_dir, tensorboard_dir=tensorboard_dir, run_name=run_name)
    except SIGTERMException:
        log.error("stopped by SIGTERM: the image so far is saved as result.png (metrics.json: interrupted)")
        sys.exit(143)
    except (NSTError, MisconfigurationException) as exc:
        user_error(exc)
    if metrics.get("interrupted"):
        log.warning("stopped early: result.png holds the image so far; continue with resume=%s", hc.runtime.output_dir)
        sys.exit(143 if metrics.get("stopped_by") == "SIGTERM" else 130)
    return metrics["loss_total"]


if __name__ == "__main__":
    main()
