"""A run in exact tiles: the same trajectory as the untiled run, the same files; what cannot tile is refused."""

from __future__ import annotations

import json

import pytest
from conftest import assert_clean_error, cli_in_process

from nst_lightning.engine.run import build_module, run
from nst_lightning.util.errors import NSTError


def test_a_tiled_run_follows_the_untiled_run(make_cfg, tmp_path):
    settings = ["size=80", "steps=4", "metrics=true", "batch_sweep.ratio=[1e-3,1e-1]"]
    whole = run(make_cfg(*settings), tmp_path / "whole")
    tiled = run(make_cfg(*settings, "engine.tile=32"), tmp_path / "tiled")
    for name in ("ratio=0.001", "ratio=0.1"):
        a, b = whole["batch"][name], tiled["batch"][name]
        assert b["loss_total"] == pytest.approx(a["loss_total"], rel=1e-5)
        assert b["metrics"]["style_gram"] == pytest.approx(a["metrics"]["style_gram"], rel=1e-4)
    saved = json.loads((tmp_path / "tiled" / "ratio=0.1" / "metrics.json").read_text())
    assert saved["steps"] == 4 and (tmp_path / "tiled" / "ratio=0.1" / "result.png").is_file()


def test_the_module_runs_in_tiles_smaller_than_the_image(make_cfg):
    module = build_module(make_cfg("size=96", "engine.tile=32"))
    assert module.tiling is not None and len(module.tiling.tiles) == 9  # 72 x 96: 3 x 3 tiles of 32 px
    assert module.tiling.halo == 80 and module.tiling.grid == 16  # conv5_1's reach, on its grid


def test_a_statistic_that_cannot_tile_is_refused_in_one_line(make_cfg, monkeypatch):
    from nst_lightning.model.statistics import Gram

    monkeypatch.setattr(Gram, "tileable", False)
    with pytest.raises(NSTError, match=r"style_loss=Gram cannot run in tiles .*set engine.tile=null") as info:
        build_module(make_cfg("engine.tile=32"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["0", "-16", "big", "1.5"])
def test_a_bad_tile_is_one_line(images, tmp_path, value):
    proc = cli_in_process(
        f"content={images['content']}", f"style={images['style']}", f"engine.tile={value}", f"hydra.run.dir={tmp_path}"
    )
    assert_clean_error(proc, f"engine.tile={value} is not valid")
