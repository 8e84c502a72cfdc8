"""The Hydra configs are found from the clone and from an installed wheel (conf/ is force-included)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import run_process

import nst_lightning
from nst_lightning.config.schema import conf_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
WHEEL_CONFIGS = [
    "nst_lightning/conf/config.yaml",
    "nst_lightning/conf/recipe/paper.yaml",
    "nst_lightning/conf/experiment/tradeoff.yaml",
]


def test_conf_dir_in_clone_is_top_level_conf():
    assert Path(nst_lightning.__file__).resolve().is_relative_to(REPO_ROOT), "these tests must run from the clone"
    found = conf_dir()
    assert found == REPO_ROOT / "conf"
    assert (found / "config.yaml").is_file()
    for group in ("experiment", "recipe"):  # the pluggable groups' options are code: nst_lightning/apps/presets.py
        assert (found / group).is_dir()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    assert importlib.util.find_spec("hatchling"), "hatchling is missing: pip install -e '.[dev]'"
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    cmd += ["--disable-pip-version-check", "-q", "-w", str(out), str(REPO_ROOT)]
    proc = run_process(cmd, timeout=300)
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(out.glob("nst_lightning-*.whl"))
    assert len(wheels) == 1, [p.name for p in out.iterdir()]
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """(site, cwd): the wheel unzipped as an import root, and an empty working folder outside the repository."""
    root = tmp_path_factory.mktemp("installed")
    site = root / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    cwd = root / "work"
    cwd.mkdir()
    return site, cwd


def run_installed(installed: tuple[Path, Path], *args: str) -> subprocess.CompletedProcess:
    site, cwd = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = str(site)
    env["PYTHONNOUSERSITE"] = "1"
    return run_process([sys.executable, *args], cwd=cwd, env=env, timeout=300)


def test_wheel_contains_the_configs(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in WHEEL_CONFIGS:
            assert name in names, f"{name} missing from {wheel.name}"
        # every YAML of the clone's conf/ is shipped, byte for byte
        for path in sorted((REPO_ROOT / "conf").rglob("*.yaml")):
            name = f"nst_lightning/conf/{path.relative_to(REPO_ROOT / 'conf').as_posix()}"
            assert name in names, f"{name} missing from {wheel.name}"
            assert zf.read(name) == path.read_bytes(), f"{name} differs from {path}"
        assert "nst_lightning/__init__.py" in names
        assert "nst_lightning/__main__.py" in names
        assert not [n for n in names if n.startswith("tests/")]


def test_installed_copy_finds_its_own_configs(installed):
    site, _ = installed
    proc = run_installed(installed, "-c", "import nst_lightning.config.schema as c; print(c.conf_dir())")
    assert proc.returncode == 0, proc.stderr
    printed = Path(proc.stdout.strip()).resolve()
    assert printed.is_relative_to(site.resolve()), f"{printed} is not inside {site}"
    assert printed == (site / "nst_lightning" / "conf").resolve()
    assert not printed.is_relative_to(REPO_ROOT)


def test_installed_entry_point_composes_config(installed):
    _, cwd = installed
    proc = run_installed(installed, "-m", "nst_lightning", "--cfg", "job")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "content_layer: conv4_2" in proc.stdout
    assert "_target_: nst_lightning.optim.lbfgs.LBFGS" in proc.stdout  # the optimizer group's default
    assert "pooling: max" in proc.stdout
    assert not (cwd / "outputs").exists()  # --cfg prints the config; nothing is run
