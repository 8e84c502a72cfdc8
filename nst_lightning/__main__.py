"""Entry point: ``python -m nst_lightning key=value ...`` (Hydra; add ``-m`` for sweeps)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from nst_lightning.config import conf_dir, register_configs
from nst_lightning.errors import NSTError

log = logging.getLogger("nst_lightning")
register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one style transfer in Hydra's run directory; return the final total loss (for sweepers)."""
    from nst_lightning.run import run  # heavy imports after Hydra has parsed the command line

    try:
        metrics = run(cfg, HydraConfig.get().runtime.output_dir)
    except (NSTError, MisconfigurationException) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("error: %s", exc)
        sys.exit(2)
    return metrics["loss_total"]


if __name__ == "__main__":
    main()
