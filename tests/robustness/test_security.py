"""Security: weights and checkpoints are data, never code; downloads are https-only and sha256-checked, into the
cache; a run reads the paths it is given and writes only into its run directory and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cli, make_painting, make_photo, small_jpeg
from omegaconf import OmegaConf

from nst_lightning.engine.run import build_module, run
from nst_lightning.inputs.builtin import PAINTINGS, fetch_painting
from nst_lightning.util.errors import NSTError

# ------------------------------------------------------------------------------------------------------------------
# Weights and checkpoints load with weights_only=True: a pickle with code in it is refused, its code never runs
# ------------------------------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: if the marker file exists, a file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def assert_payload_is_live(path: Path, marker: Path) -> None:
    """The test's premise: a plain (unsafe) torch.load of the same file does run the code."""
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_weights_file_with_code_is_refused_unexecuted(make_cfg, tmp_path):
    marker, weights = tmp_path / "code_ran", tmp_path / "weights.bin"
    torch.save({"block1_conv1_W_q": Payload(marker), "block1_conv1_b": torch.zeros(64)}, weights)
    with pytest.raises(NSTError, match=r"cannot read VGG19 weights from .*weights\.bin: UnpicklingError: Weights only"):
        build_module(make_cfg(f"network.weights={weights}"))
    assert_payload_is_live(weights, marker)


def test_checkpoint_with_code_is_refused_unexecuted(make_cfg, tmp_path):
    """``resume=`` reads a run folder's last.ckpt: one with code in it stops the run before anything is written."""
    old, marker = tmp_path / "old", tmp_path / "code_ran"
    (old / ".hydra").mkdir(parents=True)
    OmegaConf.save(make_cfg(), old / ".hydra" / "config.yaml")
    state = {"state_dict": {"image": torch.zeros(1, 3, 27, 32)}, "global_step": 1, "payload": Payload(marker)}
    torch.save(state, old / "last.ckpt")
    with pytest.raises(NSTError, match=r"last\.ckpt cannot be loaded as plain data") as info:
        run(make_cfg(f"resume={old}"), tmp_path / "new")
    assert "\n" not in str(info.value) and "UnpicklingError" in str(info.value)
    assert not (tmp_path / "new" / "result.png").exists()
    assert_payload_is_live(old / "last.ckpt", marker)


# ------------------------------------------------------------------------------------------------------------------
# Downloads: https only, pinned sha256, into the cache
# ------------------------------------------------------------------------------------------------------------------


def test_default_urls_are_pinned_https():
    for name, (url, sha) in PAINTINGS.items():
        assert url.startswith("https://raw.githubusercontent.com/jcjohnson/neural-style/master/examples/inputs/")
        assert url.endswith(f"/{name}.jpg")
        assert len(sha) == 64 and int(sha, 16) >= 0


@pytest.mark.parametrize("base_url", ["http://example.com/inputs", "ftp://127.0.0.1/x", "file:///etc"])
def test_fetch_refuses_insecure_remote_urls(tmp_path, base_url, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("must be refused before any request")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    with pytest.raises(NSTError, match="https"):
        fetch_painting("starry_night", cache_dir=tmp_path, base_url=base_url)
    assert not (tmp_path / "paintings" / "starry_night.jpg").exists()


def test_fetch_wrong_sha_is_refused_and_leaves_nothing(server, tmp_path, monkeypatch):
    base_url, www, _ = server
    (www / "starry_night.jpg").write_bytes(small_jpeg())
    monkeypatch.setitem(PAINTINGS, "starry_night", (PAINTINGS["starry_night"][0], "0" * 64))
    cache = tmp_path / "cache"
    with pytest.raises(NSTError, match="sha256") as info:
        fetch_painting("starry_night", cache_dir=cache, base_url=base_url)
    assert "0" * 64 in str(info.value) and "\n" not in str(info.value)
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # nothing unverified kept, no temp file


def test_fetch_replaces_a_corrupted_cached_file(served_painting, tmp_path):
    base_url, data, requests = served_painting
    target = tmp_path / "paintings" / "starry_night.jpg"
    target.parent.mkdir()
    target.write_bytes(b"half a file")
    assert fetch_painting("starry_night", cache_dir=tmp_path, base_url=base_url).read_bytes() == data
    assert len(requests) == 1


# ------------------------------------------------------------------------------------------------------------------
# Writes: only the run directory and the cache
# ------------------------------------------------------------------------------------------------------------------


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_a_run_writes_only_in_its_run_dir_and_the_cache(tmp_path, monkeypatch):
    """A whole CLI run with HOME, the working directory and TMPDIR pointed at fresh folders: every file that
    appears is in the run directory (outputs/runs/<date_time>/ under the working directory) or in the user cache
    (~/.cache: ours, and the font list matplotlib keeps there); the input images are only read."""
    home, cwd, tmp, inputs = (tmp_path / name for name in ("home", "cwd", "tmp", "inputs"))
    for folder in (home, cwd, tmp, inputs):
        folder.mkdir()
    content, style = make_photo(inputs / "photo.png"), make_painting(inputs / "painting.png")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (content, style)}
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "NST_LIGHTNING_CACHE", "TORCH_HOME", "MPLCONFIGDIR"):
        monkeypatch.delenv(var, raising=False)

    args = [f"content={content}", f"style={style}", "init=image", f"init.path={style}", "size=32", "steps=2"]
    proc = cli(*args, "snapshot_every=1", cwd=cwd, env={"HOME": str(home), "TMPDIR": str(tmp)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    (run_dir,) = (cwd / "outputs" / "runs").iterdir()
    assert {"result.png", "metrics.json", "snapshots", "tensorboard", ".hydra"} <= {p.name for p in run_dir.iterdir()}
    allowed = (run_dir, home / ".cache", inputs)
    assert sorted(p for p in files_under(tmp_path) if not any(p.is_relative_to(a) for a in allowed)) == []
    assert files_under(inputs) == set(before)
    for path, (data, mtime) in before.items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
    assert not files_under(tmp)  # no temporary file left behind
