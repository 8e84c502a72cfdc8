"""A run folder's record (``.hydra/config.yaml``): the settings it ran with, and ``resume=`` from it.

Each record says which version of the settings it holds (``settings_version``; a record without one is version 1,
written before the pluggable parts). ``resume`` migrates an older record explicitly, step by step, then compares it
with this version's schema: a key the record lacks or holds unknown (a renamed key is both) is refused in one line
naming the keys, never filled with today's default, so a resumed run computes what the stopped one computed.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from nst_lightning.config.schema import SETTINGS_VERSION, Config
from nst_lightning.util.errors import NSTError, first_line
from nst_lightning.util.files import shown, too_long

# What may change on resume: how long it runs and how it is logged and run, never what it computes.
RESUMABLE_KEYS = (
    "steps",
    "snapshot_every",
    "engine.log_every",
    "engine.checkpoint_every",
    "engine.checkpoint_minutes",
    "engine.tile",
    "trainer.",
)
STATISTICS_V1 = {
    "gram": "Gram",
    "mean_std": "MeanStd",
    "mmd": "MMD",
    "gaussian_w2": "GaussianW2",
    "sliced_wasserstein": "SlicedWasserstein",
    "mrf": "MRF",
}
SEEDED_V1 = ("mmd", "sliced_wasserstein", "mrf")  # their subsamples and draws followed the run's seed


def _v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    """Version 1 named the style statistic, the weight source and the optimiser; version 2 names the classes they
    build (``_target_``) and adds the logger (TensorBoard, the only one version 1 had), callbacks and extra terms
    (none), tiles (none) and the trainer's strategy (auto)."""
    new = dict(old)
    style = dict(old.get("style_loss") or {})
    name = str(style.pop("name", "gram"))
    if name not in STATISTICS_V1:
        raise NSTError(f"the record names style_loss {name!r}, which this version does not know")
    new["style_loss"] = {
        "_target_": f"nst_lightning.model.statistics.{STATISTICS_V1[name]}",
        "_partial_": True,
        "_convert_": "all",
        **{k: v for k, v in style.items() if v is not None},
        **({"seed": old.get("seed", 0)} if name in SEEDED_V1 else {}),
    }
    network = dict(old.get("network") or {})
    if network.get("seed") is None:
        network["seed"] = old.get("seed", 0)
    new["network"] = {"_target_": "nst_lightning.model.vgg.VGG", "_convert_": "all", **network}
    optimizer = dict(old.get("optimizer") or {})
    kind = optimizer.pop("name", "lbfgs")
    target = "nst_lightning.optim.lbfgs.LBFGS" if kind == "lbfgs" else "torch.optim.Adam"
    new["optimizer"] = {"_target_": target, "_partial_": True, "_convert_": "all", **optimizer}
    new["logger"] = {
        "_target_": "lightning.pytorch.loggers.tensorboard.TensorBoardLogger",
        "_partial_": True,
        "_convert_": "all",
        "default_hp_metric": False,
    }
    new["callbacks"], new["extra_terms"] = {}, {}
    new["engine"] = {**dict(old.get("engine") or {}), "tile": None}
    new["trainer"] = {"strategy": "auto", **dict(old.get("trainer") or {})}
    new["settings_version"] = 2
    return new


MIGRATIONS = {1: _v1_to_v2}


def migrate(record: dict[str, Any], where: str) -> dict[str, Any]:
    """``record`` brought to this version's settings, one explicit step per version; refused if newer."""
    version = record.get("settings_version", 1)
    if not isinstance(version, int) or version > SETTINGS_VERSION or version < 1:
        raise NSTError(
            f"{where} holds settings version {version}; this nst-lightning reads versions 1 to {SETTINGS_VERSION}: "
            "resume it with the nst-lightning that made it"
        )
    while version < SETTINGS_VERSION:
        record = MIGRATIONS[version](record)
        version = record["settings_version"]
    return record


def differences(record: dict[str, Any], schema: type = Config, prefix: str = "") -> tuple[list[str], list[str]]:
    """(keys the schema has and the record lacks, keys the record has and the schema does not), dotted; nested
    dataclass nodes are compared too, free-form and plug-in nodes are not."""
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    missing = [prefix + name for name in names if name not in record]
    unknown = [prefix + name for name in record if name not in hints]
    for name, value in record.items():
        inner = hints.get(name)
        if isinstance(inner, type) and dataclasses.is_dataclass(inner) and isinstance(value, dict):
            more_missing, more_unknown = differences(value, inner, f"{prefix}{name}.")
            missing += more_missing
            unknown += more_unknown
    return missing, unknown


def load_record(folder: Path) -> dict[str, Any]:
    """The settings a run folder recorded, migrated to this version and checked against the schema."""
    saved = folder / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise NSTError(f"resume={folder}: not a run folder (no .hydra/config.yaml there)")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    except Exception as exc:  # a half-written or hand-edited yaml
        raise NSTError(f"resume={folder}: cannot read {saved} ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise NSTError(f"resume={folder}: {saved} holds no settings")
    record = migrate(raw, f"resume={folder}")
    missing, unknown = differences(record)
    if missing or unknown:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"holds unknown {', '.join(unknown)}"] if unknown else []
        )
        raise NSTError(
            f"resume={folder}: its record {' and '.join(parts)} (settings version {raw.get('settings_version', 1)}): "
            "resuming would change the run's settings; rerun it instead"
        )
    return record


def _checked_checkpoint(folder: Path) -> tuple[Path, int]:
    """The folder's checkpoint and the step it holds."""
    checkpoint = folder / "last.ckpt"
    if not checkpoint.is_file():
        raise NSTError(f"resume={folder}: no last.ckpt there; the run finished, or stopped before its first checkpoint")
    try:  # refuse a corrupt or unsafe checkpoint now, in one line, before any heavy work
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NSTError(f"resume={folder}: last.ckpt cannot be loaded as plain data ({first_line(exc)})") from None
    return checkpoint, int(state.get("global_step", 0)) if isinstance(state, dict) else 0


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume(config: Config, overrides: list[str]) -> tuple[Config, Path | None, Path | None]:
    """(settings, checkpoint, resumed folder): ``config`` itself for a new run; with ``resume=<run dir>``, that
    run's own settings, its checkpoint (image, optimiser, step) and the folder.

    ``overrides`` (the command line's key=value) may change only what does not change the result so far: the
    step count, snapshots, logging, tiles and trainer settings. Anything else is refused in one line.
    """
    if not config.resume:
        return config, None, None
    old = Path(config.resume)
    if reason := too_long(old / ".hydra" / "config.yaml"):  # is_file() would raise: the system refuses the name
        raise NSTError(f"resume={shown(old)}: not a run folder ({reason})")
    if not (old / ".hydra" / "config.yaml").is_file():
        raise NSTError(f"resume={old}: not a run folder (no .hydra/config.yaml there)")
    checkpoint, reached = _checked_checkpoint(old)
    changed = [_key(o) for o in overrides if "=" in o and not o.startswith(("resume=", "hydra."))]
    refused = [key for key in changed if not key.startswith(RESUMABLE_KEYS)]
    if refused:
        raise NSTError(
            f"resume={old} keeps the run's own settings; {', '.join(refused)} cannot change on resume "
            f"(only steps, snapshot_every, engine.log_every, engine.checkpoint_every, engine.tile and trainer.* can)"
        )
    merged = OmegaConf.merge(OmegaConf.structured(Config), load_record(old))
    current = OmegaConf.structured(config)
    for key in changed:
        OmegaConf.update(merged, key, OmegaConf.select(current, key), force_add=True)
    merged.resume = None
    if merged.steps <= reached:
        raise NSTError(
            f"resume={old}: its checkpoint is already at step {reached}, so steps={merged.steps} leaves nothing to "
            f"run: give steps= above {reached}"
        )
    return OmegaConf.to_object(merged), checkpoint, old  # type: ignore[return-value]
