"""python -m nst_lightning.video: a synthetic clip (a square moving over a gradient, 3 frames of 32x32) as a
folder of PNGs and as an mp4; the frames, the video, metrics.json, the chaining of frames, bad input."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, cli_in_process, make_painting, pixels, run_process
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

import nst_lightning.apps.cli
from nst_lightning.apps import video
from nst_lightning.config.schema import conf_dir

FRAMES, SIZE = 3, 32


def clip_frame(k: int, size: int = SIZE) -> np.ndarray:
    """Frame k: a yellow square moving 3 px right per frame over a colour gradient, (size, size, 3) uint8."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.8 - 0.5 * x], -1)
    side, x0, y0 = size // 4, size // 8 + 3 * k, size // 3
    img[y0 : y0 + side, x0 : x0 + side] = (0.95, 0.85, 0.2)
    return (img * 255).astype(np.uint8)


def make_folder(folder: Path, n: int = FRAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(clip_frame(k)).save(folder / f"frame_{k}.png")
    return folder


def make_mp4(path: Path, n: int = FRAMES, fps: int = 10) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for k in range(n):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(clip_frame(k), format="rgb24")))
        container.mux(stream.encode())
    return path


def read_video(path: Path) -> list[np.ndarray]:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def tiny(tmp_path: Path, *args: str) -> list[str]:
    """The video CLI's arguments on tiny settings: 32 px, 2 steps per frame, CPU, no progress bar."""
    style = make_painting(tmp_path / "painting.png")
    base = [f"style={style}", f"size={SIZE}", "first_steps=2", "steps=2", "trainer.enable_progress_bar=false"]
    return [*base, "trainer.accelerator=cpu", *args]


@pytest.fixture
def video_cli(monkeypatch):
    """conftest's ``cli_in_process`` (the Hydra app called in this process), pointed at the video entry point."""
    monkeypatch.setattr(nst_lightning.apps.cli, "main", video.main)
    return cli_in_process


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- whole clips -------------------------------------------------------------------------------------------------


def test_mp4_clip_with_flow(tmp_path, video_cli):
    pytest.importorskip("cv2")
    clip = make_mp4(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    args = ("init=content", "temporal_weight=1", "flow=auto", f"hydra.run.dir={out}")
    proc = video_cli(*tiny(tmp_path, f"input={clip}", *args))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert sorted(p.name for p in (out / "input").iterdir()) == [f"{k:05d}.png" for k in range(FRAMES)]
    assert sorted(p.name for p in (out / "stylised").iterdir()) == [f"{k:05d}.png" for k in range(FRAMES)]
    for k in range(FRAMES):
        folder = out / "frames" / f"frame_{k:05d}"
        for name in ("result.png", "metrics.json", ".hydra/config.yaml"):
            assert (folder / name).is_file(), folder / name
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
        assert Image.open(out / "stylised" / f"{k:05d}.png").size == (SIZE, SIZE)
        assert (out / "stylised" / f"{k:05d}.png").read_bytes() == (folder / "result.png").read_bytes()

    # frame 0 from init with first_steps; frame k > 0 from the warped previous result, with the temporal loss
    first = OmegaConf.load(out / "frames/frame_00000/.hydra/config.yaml")
    assert first.init.kind == "content" and first.temporal_weight == 0 and first.content == str(out / "input/00000.png")
    for k in range(1, FRAMES):
        folder = out / "frames" / f"frame_{k:05d}"
        one = OmegaConf.load(folder / ".hydra/config.yaml")
        assert one.init.kind == "image" and one.init.path == str(folder / "warped_previous.png")
        assert one.temporal_target == one.init.path and one.temporal_weight == 1
        assert "input" not in one and "flow" not in one  # a frame's config is a plain run's
        assert load_json(folder / "metrics.json")["loss_temporal"] >= 0

    frames = read_video(out / "stylised.mp4")
    assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)
    # H.264 at crf 18 is close to the PNGs (lossy, so not equal)
    assert np.abs(frames[1] / 255 - pixels(out / "stylised/00001.png")).mean() < 0.05

    metrics = load_json(out / "metrics.json")
    assert metrics["frames"] == FRAMES and metrics["flow"] == "farneback" and metrics["video"] == "stylised.mp4"
    assert metrics["fps"] == pytest.approx(10)
    assert metrics["size"] == [SIZE, SIZE]
    assert [m["steps"] for m in metrics["per_frame"]] == [2, 2, 2]
    assert len(metrics["loss_total"]) == FRAMES and metrics["loss_temporal"][0] is None
    assert len(metrics["temporal_difference"]) == len(metrics["warped_difference"]) == FRAMES - 1
    assert 0 < metrics["temporal_difference_mean"] < 1 and 0 < metrics["input_difference_mean"] < 1
    assert metrics["seconds"] > 0 and metrics["interrupted"] is False


def test_each_frame_starts_from_the_previous_and_the_temporal_loss_holds_it(tmp_path, video_cli, monkeypatch):
    """A folder of frames, flow=none: frame k starts from stylised frame k-1 itself. With 8 steps per frame and a
    large temporal_weight, consecutive stylised frames are measurably closer (here about 3x) than without the
    temporal loss, which lets each frame move off its start. Without PyAV the video is a GIF."""
    frames = make_folder(tmp_path / "frames")
    differences = {}
    for weight in (0, 10000):
        out = tmp_path / f"w{weight}"
        monkeypatch.setattr(video, "_import_av", lambda: None)  # no encoder: stylised.gif
        proc = video_cli(
            *tiny(tmp_path, f"input={frames}", "flow=none", "init=content", "steps=8", f"temporal_weight={weight}"),
            f"hydra.run.dir={out}",
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        one = OmegaConf.load(out / "frames/frame_00001/.hydra/config.yaml")
        assert one.init.path == str(out / "stylised/00000.png") and one.content == str(frames / "frame_1.png")
        assert not (out / "frames/frame_00001/warped_previous.png").exists()
        metrics = load_json(out / "metrics.json")
        assert metrics["flow"] == "none" and metrics["warped_difference"] == [] and metrics["fps"] == 24
        assert metrics["video"] == "stylised.gif" and not (out / "stylised.mp4").exists()
        with Image.open(out / "stylised.gif") as gif:
            assert gif.n_frames == FRAMES and gif.size == (SIZE, SIZE)
        differences[weight] = metrics["temporal_difference_mean"]
    # measured: the start (the previous result) is held by the temporal loss, else the frame moves off it
    assert differences[10000] < 0.5 * differences[0], differences


def test_the_real_command_line(tmp_path):
    """``python -m nst_lightning.video`` in a subprocess: max_frames, fps, and the video written."""
    clip = make_mp4(tmp_path / "clip.mp4", n=FRAMES)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = tiny(tmp_path, f"input={clip}", "max_frames=2", "fps=5", "first_steps=1", "steps=1", f"hydra.run.dir={out}")
    proc = run_process([sys.executable, "-m", "nst_lightning.video", *args], env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = load_json(out / "metrics.json")
    assert metrics["frames"] == 2 and metrics["fps"] == 5
    assert len(read_video(out / "stylised.mp4")) == 2


# ---- bad input ---------------------------------------------------------------------------------------------------


def _broken_video(tmp_path: Path) -> Path:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    return path


def _text_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no frames here")
    return folder


def _mixed_sizes(tmp_path: Path) -> Path:
    folder = make_folder(tmp_path / "mixed", n=2)
    Image.fromarray(clip_frame(2, size=40)).save(folder / "frame_2.png")
    return folder


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (None, [], "input is not set"),
        (lambda t: t / "missing.mp4", [], "not found"),
        (_empty, [], "is empty"),
        (_text_folder, [], "holds no images"),
        (_broken_video, [], "is not a video PyAV can read"),
        (_mixed_sizes, [], "frames must match"),
        (lambda t: make_folder(t / "f"), ["flow=optical"], "unknown flow 'optical'"),
        (lambda t: make_folder(t / "f"), ["first_steps=0"], "first_steps=0 is not valid"),
        (lambda t: make_folder(t / "f"), ["max_frames=0"], "max_frames=0 is not valid"),
        (lambda t: make_folder(t / "f"), ["fps=-1"], "fps=-1.0 is not valid"),
        (lambda t: make_folder(t / "f"), ["size=4"], "size=4 is too small"),
        (lambda t: make_folder(t / "f"), ["batch_sweep.ratio=[1e-2,1e-3]"], "batch_sweep is not supported"),
    ],
)
def test_bad_input_is_one_line(tmp_path, video_cli, make_input, extra, message):
    if make_input is _broken_video:
        pytest.importorskip("av")
    args = [f"input={make_input(tmp_path)}"] if make_input else []
    proc = video_cli(*tiny(tmp_path, *args, *extra, f"hydra.run.dir={tmp_path / 'out'}"))
    assert_clean_error(proc, message)
    assert not (tmp_path / "out" / "frames").exists()  # failed before any frame ran


def test_missing_optional_dependencies_are_named(tmp_path, video_cli, monkeypatch):
    monkeypatch.setattr(video, "_import_av", lambda: None)
    monkeypatch.setattr(video, "_import_cv2", lambda: None)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded anyway")
    proc = video_cli(*tiny(tmp_path, f"input={clip}", "flow=none", f"hydra.run.dir={tmp_path / 'a'}"))
    assert "nst-lightning[video]" in assert_clean_error(proc, "needs PyAV")
    proc = video_cli(*tiny(tmp_path, f"input={make_folder(tmp_path / 'f')}", "flow=farneback"))
    assert "nst-lightning[video]" in assert_clean_error(proc, "flow=farneback needs OpenCV")
    assert video.flow_method("auto") == "none"  # auto: plain start without OpenCV


def test_real_command_line_bad_input(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = run_process(
        [sys.executable, "-m", "nst_lightning.video", f"input={tmp_path / 'nope.mp4'}", f"hydra.run.dir={tmp_path}"],
        env=env,
        timeout=300,
    )
    assert_clean_error(proc, "not found")


# ---- the pieces --------------------------------------------------------------------------------------------------


def test_config_composes_the_main_config_and_restores_its_schema():
    with video.video_schema(), initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("video", overrides=["input=clip.mp4", "ratio=1e-2", "network=vgg19_random"])
        assert cfg.input == "clip.mp4" and cfg.ratio == 1e-2 and cfg.network.source == "random"
        assert cfg.first_steps == 300 and cfg.steps == 100 and cfg.flow == "auto" and cfg.temporal_weight > 0
        with pytest.raises(Exception, match="inptu"):
            compose("video", overrides=["inptu=clip.mp4"])
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):  # the main app does not know the video keys
        with pytest.raises(Exception, match="input"):
            compose("config", overrides=["input=clip.mp4"])
    frame = video.frame_config(OmegaConf.to_object(cfg), Path("f.png"), Path("start.png"))
    assert not any(hasattr(frame, key) for key in video.VIDEO_KEYS)
    assert frame.init.kind == "image" and frame.content == "f.png"
    assert (conf_dir() / "video.yaml").is_file()  # shipped in the wheel with conf/ (see test_packaging)


def test_folder_frames_in_natural_order(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("f10.png", "f2.png", "f1.jpg", ".hidden.png"):
        Image.new("RGB", (8, 8)).save(folder / name, format="PNG")
    (folder / "notes.txt").write_text("x")
    assert [p.name for p in video.folder_frames(folder)] == ["f1.jpg", "f2.png", "f10.png"]
    assert [p.name for p in video.folder_frames(folder, max_frames=2)] == ["f1.jpg", "f2.png"]


def test_flow_warp_moves_the_previous_frame_onto_the_current():
    pytest.importorskip("cv2")
    previous, current = clip_frame(0, size=64), clip_frame(2, size=64)  # the square moved 6 px
    warped = video.warp(previous, video.backward_flow(current, previous))
    before = np.abs(previous.astype(float) - current).mean()
    after = np.abs(warped.astype(float) - current).mean()
    assert after < 0.5 * before, (before, after)


def test_odd_sizes_are_padded_for_h264(tmp_path):
    pytest.importorskip("av")
    frames = []
    for k in range(2):
        frames.append(tmp_path / f"{k}.png")
        Image.fromarray(clip_frame(k, size=36)[:35, :33]).save(frames[-1])
    path = video.write_video(frames, tmp_path / "odd", fps=12.5)
    decoded = read_video(path)
    assert path.name == "odd.mp4" and len(decoded) == 2 and decoded[0].shape == (36, 34, 3)
