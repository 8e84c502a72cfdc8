"""The memory plan fits the run to the memory there is: untiled where it fits, else the largest exact tile that
fits, else the smallest tile with the longest L-BFGS history that fits; refused only when nothing fits."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from nst_lightning.config.validate import validate_run
from nst_lightning.engine import memory
from nst_lightning.engine.parts import build_parts
from nst_lightning.engine.run import run
from nst_lightning.util.errors import NSTError


@pytest.fixture(autouse=True)
def exact_plans(monkeypatch):
    """The plans below are checked at the estimate's own numbers; the headroom has its own test."""
    monkeypatch.setattr(memory, "TILED_HEADROOM", 1.0)


def _plan(config, monkeypatch, available):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": available)
    return memory.plan_memory(config, validate_run(config), build_parts(config))


def _estimates(config):
    images, parts = validate_run(config), build_parts(config)
    shape = memory.run_shape(config, images, parts, "cpu")
    return shape, memory.estimate(shape, config.size)


def test_auto_stays_untiled_where_the_run_fits(make_cfg, monkeypatch):
    fit = _plan(make_cfg("size=1024", "engine.tile=auto"), monkeypatch, 2**40)
    assert fit.tile is None and fit.history_size is None and fit.said is None


def test_auto_takes_the_largest_tile_that_fits(make_cfg, monkeypatch):
    config = make_cfg("size=2048", "engine.tile=auto")
    shape, untiled = _estimates(config)
    at_1024 = memory.tiled_estimate(shape, 2048, 1024)
    assert at_1024 < untiled and memory.tiled_estimate(shape, 2048, 512) < at_1024  # smaller tiles, less memory
    fit = _plan(config, monkeypatch, (at_1024 + untiled) // 2)
    assert fit.tile == 1024 and fit.needed == at_1024 and "engine.tile=auto: 1024 px tiles" in fit.said
    fit = _plan(config, monkeypatch, at_1024 - 1)
    assert fit.tile == 768


def test_auto_shortens_the_history_where_even_the_smallest_tile_does_not_fit(make_cfg, monkeypatch):
    config = make_cfg("size=2048", "engine.tile=auto")
    shape, _ = _estimates(config)
    smallest = memory.tiled_estimate(shape, 2048, 256)
    with_40 = memory.tiled_estimate(shape, 2048, 256, 40 / 100)
    fit = _plan(config, monkeypatch, with_40)
    assert (fit.tile, fit.history_size) == (256, 40) and fit.needed <= with_40 < smallest
    assert "optimizer.history_size=40, the most that fits" in fit.said and "\n" not in fit.said


def test_nothing_fits_is_refused_with_the_size_that_does(make_cfg, monkeypatch):
    with pytest.raises(NSTError, match=r"size=2048 needs about .* lower size \(about \d+ px fits in tiles\)"):
        _plan(make_cfg("size=2048", "engine.tile=auto"), monkeypatch, 2**28)


def test_untiled_refusal_offers_tiles(make_cfg, monkeypatch):
    config = make_cfg("size=2048", "engine.tile=null")
    shape, _ = _estimates(config)
    with pytest.raises(NSTError, match=r"engine.tile=auto \(exact tiles: the same result in less memory\)"):
        _plan(config, monkeypatch, memory.tiled_estimate(shape, 2048, 512))


def test_the_default_tiles_a_run_only_where_it_does_not_fit(make_cfg, monkeypatch):
    config = make_cfg("size=2048")
    assert config.engine.tile == "auto"
    shape, untiled = _estimates(config)
    assert _plan(config, monkeypatch, untiled).tile is None  # it fits whole: no tiles, no halo to pay
    fit = _plan(config, monkeypatch, memory.tiled_estimate(shape, 2048, 512))
    assert fit.tile == 512 and fit.history_size is None


def test_a_statistic_that_cannot_tile_is_refused_without_offering_tiles(make_cfg, monkeypatch):
    from nst_lightning.model import statistics

    monkeypatch.setattr(statistics.Gram, "tileable", False)  # as a researcher's own statistic may declare
    config = make_cfg("size=2048")
    shape, _ = _estimates(config)
    with pytest.raises(NSTError, match=r"size=2048 needs about") as info:
        _plan(config, monkeypatch, memory.tiled_estimate(shape, 2048, 512))
    assert "engine.tile" not in str(info.value) and "\n" not in str(info.value)


def test_a_run_records_the_tile_and_history_it_chose(make_cfg, monkeypatch, tmp_path, caplog):
    config = make_cfg("size=64", "steps=2", "engine.tile=auto")
    shape, _ = _estimates(config)
    need = memory.tiled_estimate(shape, 64, 256, 7 / 100)
    monkeypatch.setattr(memory, "TILE_SIDES", (256,))  # a 64 px image: its one tile is the whole of it
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": need)
    with caplog.at_level("INFO"):
        run(config, tmp_path / "run")
    assert any("optimizer.history_size=7, the most that fits" in r.getMessage() for r in caplog.records)
    record = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    assert record.optimizer.history_size == 7 and record.engine.tile == 256


def test_tiles_are_planned_with_headroom(make_cfg, monkeypatch):
    config = make_cfg("size=2048")
    shape, _ = _estimates(config)
    available = memory.tiled_estimate(shape, 2048, 1024)
    assert _plan(config, monkeypatch, available).tile == 1024
    monkeypatch.setattr(memory, "TILED_HEADROOM", 0.8)
    fit = _plan(config, monkeypatch, available)
    assert fit.tile is not None and fit.tile < 1024 and fit.needed <= 0.8 * available


def test_the_tiled_plan_counts_the_end_of_run_panel(make_cfg):
    """With exact tiles a step holds one tile, so the panel at the end (measured at up to 1024 px while the run's
    state is still held) can be the largest phase; with metrics=false it does not count."""
    measured, unmeasured = (_estimates(make_cfg("size=4096", f"metrics={m}"))[0] for m in ("true", "false"))
    with_panel = memory.tiled_estimate(measured, 4096, 256)
    without = memory.tiled_estimate(unmeasured, 4096, 256)
    assert with_panel > without
    assert memory.panel_bytes(3072, 4096) == memory.panel_bytes(768, 1024) > memory.panel_bytes(384, 512)
