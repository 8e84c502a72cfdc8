"""Every default is stated once: in the constructor of what it configures, or in the structured config; a preset
or a YAML file states only what it changes."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from conftest import compose_cfg
from omegaconf import OmegaConf

from nst_lightning.apps import presets
from nst_lightning.config.nodes import options
from nst_lightning.config.schema import conf_dir

GROUPS = {"network": presets.NETWORKS, "style_loss": presets.STYLE_LOSSES, "optimizer": presets.OPTIMIZERS}
GROUPS["logger"] = presets.LOGGERS


@pytest.mark.parametrize(("group", "name"), [(g, n) for g, o in GROUPS.items() for n in o])
def test_a_preset_sets_only_what_differs_from_its_constructor(group, name):
    schema = GROUPS[group][name]
    target = schema._target_
    module, _, attribute = target.rpartition(".")
    constructor = getattr(__import__(module, fromlist=[attribute]), attribute)
    defaults = {key: default for key, (_, default) in options(constructor).items()}
    restated = {key: value for key, value in schema.preset.items() if defaults.get(key) == value}
    assert not restated, f"{group}={name} restates its constructor's defaults: {restated}"
    assert inspect.signature(constructor)  # the schema's fields come from here, not from a copy


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# jcjohnson and tch_rs are other programs' settings, written out whole so that they stay those programs' whatever
# our defaults become; the study presets and the paper's recipe state only what they change.
PEERS = ("jcjohnson", "tch_rs")
PRESET_FILES = [p for p in sorted((conf_dir() / "experiment").glob("*.yaml")) if p.stem not in PEERS]
PRESET_FILES.append(conf_dir() / "recipe" / "paper.yaml")


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_a_preset_file_sets_only_what_it_changes(path: Path):
    own = OmegaConf.to_container(OmegaConf.load(path))
    own.pop("defaults", None)
    own.pop("hydra", None)
    base = compose_cfg("recipe=paper") if "override /recipe: paper" in path.read_text() else compose_cfg()
    restated = [key for key, value in _leaves(own) if OmegaConf.select(base, key) == value]
    assert not restated, f"{path.name} restates the values it starts from: {restated}"
