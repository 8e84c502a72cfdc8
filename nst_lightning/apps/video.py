"""Video: ``python -m nst_lightning.video input=clip.mp4 style=painting.jpg`` stylises a clip frame by frame.

Frame 0 is an ordinary run (``first_steps`` steps from ``init``). Frame k > 0 starts from the stylised frame
k-1, warped along the optical flow from frame k back to frame k-1 (OpenCV's Farneback, when installed:
``flow=auto|farneback|none``), and the temporal loss (``temporal_weight``) keeps it close to that same image,
so the style does not flicker from one frame to the next; it runs ``steps`` steps.

``input`` is a video file (decoded by PyAV) or a folder of frames (any images, in natural name order). In the
run folder: ``input/`` (a video's frames, at the output size), ``frames/frame_NNNNN/`` (one normal run folder
per frame: result.png, metrics.json, tensorboard/, .hydra/config.yaml), ``stylised/NNNNN.png``,
``stylised.mp4`` (H.264 through PyAV; ``stylised.gif`` without PyAV) and ``metrics.json`` (per-frame losses and
how much consecutive stylised frames differ).

Install the readers, the encoder and the optical flow with ``pip install "nst-lightning[video]"``; a folder of
frames in and a GIF out need neither.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from nst_lightning.apps import sweeps  # noqa: F401  registers ${pid:}, used by the default run folder
from nst_lightning.apps.presets import register_configs
from nst_lightning.config.derive import stage_sizes
from nst_lightning.config.schema import Config, conf_dir
from nst_lightning.config.validate import check_layers, positive_counts, validate_run
from nst_lightning.util import interrupts
from nst_lightning.util.errors import NSTError, full_error, user_error
from nst_lightning.util.files import atomic_write, natural_key

log = logging.getLogger("nst_lightning")

FLOWS = ("auto", "farneback", "none")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = 24.0  # a folder of frames carries no frame rate
INSTALL_HINT = 'pip install "nst-lightning[video]"'


@dataclass
class VideoConfig(Config):
    """The configuration of one run plus the video's own keys (``conf/video.yaml`` sets the video defaults)."""

    input: str | None = None  # a video file or a folder of frames
    fps: float | None = None  # frame rate of the output video; None: the input's (a folder: 24)
    first_steps: int = 300  # steps of frame 0 (from `init`); later frames run `steps` from the previous one
    flow: str = "auto"  # auto (farneback if OpenCV is installed) | farneback | none
    max_frames: int | None = None  # only the first N frames


VIDEO_KEYS = tuple(f.name for f in dataclasses.fields(VideoConfig) if f.name not in Config.__dataclass_fields__)


@contextlib.contextmanager
def video_schema() -> Iterator[None]:
    """While composing ``conf/video.yaml``: ``nst_schema`` (which conf/config.yaml starts from) is VideoConfig,
    so the video keys are typed and unknown keys still fail; afterwards it is the plain Config again."""
    register_configs()
    ConfigStore.instance().store(name="nst_schema", node=VideoConfig)
    try:
        yield
    finally:
        register_configs()


# ---- frames in ---------------------------------------------------------------------------------------------------


def folder_frames(folder: Path, max_frames: int | None = None) -> list[Path]:
    """The images of ``folder`` in natural name order (hidden files and other files are ignored)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise NSTError(f"input folder '{folder}' is empty: put the frames there as images (00000.png, 00001.png, ...)")
    frames = sorted((p for p in files if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not frames:
        raise NSTError(
            f"input folder '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)}): "
            "give a folder of frames or a video file"
        )
    frames = frames[:max_frames] if max_frames else frames
    sizes = {}
    for path in frames:  # the header only: a mismatch fails now, not after hours of earlier frames
        try:
            with Image.open(path) as image:
                sizes[path] = image.size
        except (OSError, ValueError) as exc:
            raise NSTError(f"input frame '{path}' is not an image PIL can read ({exc})") from None
        if sizes[path] != sizes[frames[0]]:
            (w, h), (w0, h0) = sizes[path], sizes[frames[0]]
            raise NSTError(f"input frame '{path}' is {w}x{h} px but '{frames[0].name}' is {w0}x{h0}: frames must match")
    return frames


def _import_av() -> Any:
    try:
        return importlib.import_module("av")
    except ImportError:
        return None


def decode_video(path: Path, out: Path, long_side: int, max_frames: int | None = None) -> tuple[list[Path], float]:
    """Decode ``path`` (PyAV) into ``out/NNNNN.png`` at the output's long side; (the frames, the frame rate)."""
    from nst_lightning.inputs.images import resize_long_side

    av = _import_av()
    if av is None:
        raise NSTError(f"reading the video '{path}' needs PyAV: {INSTALL_HINT} (or give a folder of frames)")
    frames: list[Path] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise NSTError(f"input '{path}' has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            for frame in container.decode(stream):
                image = resize_long_side(frame.to_image().convert("RGB"), long_side)
                target = out / f"{len(frames):05d}.png"
                atomic_write(target, lambda f, image=image: image.save(f, format="PNG"))
                frames.append(target)
                if max_frames and len(frames) >= max_frames:
                    break
    except NSTError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NSTError(f"input '{path}' is not a video PyAV can read ({detail})") from None
    if not frames:
        raise NSTError(f"input '{path}' has no frames PyAV can decode")
    return frames, float(rate) if rate else DEFAULT_FPS


# ---- optical flow ------------------------------------------------------------------------------------------------


def _import_cv2() -> Any:
    try:
        return importlib.import_module("cv2")
    except ImportError:  # not installed, or an OpenCV build whose system libraries are missing
        return None


def flow_method(choice: str) -> str:
    """``flow`` resolved: ``farneback`` or ``none`` (``auto``: farneback when OpenCV can be imported)."""
    if choice not in FLOWS:
        raise NSTError(f"unknown flow '{choice}'; use one of: {', '.join(FLOWS)}")
    if choice == "none":
        return "none"
    available = _import_cv2() is not None
    if choice == "farneback" and not available:
        raise NSTError(f"flow=farneback needs OpenCV: {INSTALL_HINT} (or flow=none: start from the unwarped frame)")
    return "farneback" if available else "none"


def backward_flow(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Farneback flow (H, W, 2) from ``current`` back to ``previous`` (RGB uint8 frames of one size):
    pixel (x, y) of ``current`` shows what ``previous`` shows at (x + flow[y, x, 0], y + flow[y, x, 1])."""
    cv2 = _import_cv2()
    grey = [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in (current, previous)]
    window = max(5, min(current.shape[:2]) // 16) | 1  # about 16 px at 256 px; scales with the frame
    levels = max(1, min(4, int(np.log2(max(min(current.shape[:2]) / 16, 1)))))
    return cv2.calcOpticalFlowFarneback(*grey, None, 0.5, levels, window, 3, 5, 1.1, 0)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3 uint8, e.g. the previous stylised frame) moved along a ``backward_flow``: bilinear,
    edges replicated where the flow points outside the frame."""
    cv2 = _import_cv2()
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ---- video out ---------------------------------------------------------------------------------------------------


def _encoder(av: Any) -> str | None:
    for name in ("libx264", "libopenh264", "mpeg4"):
        with contextlib.suppress(Exception):
            av.codec.Codec(name, "w")
            return name
    return None


def write_video(frames: list[Path], stem: Path, fps: float) -> Path:
    """``stem``.mp4 (H.264, yuv420p, through PyAV), else ``stem``.gif (Pillow); returns the file written.

    yuv420p needs even sides: an odd width or height is padded by repeating the last column or row."""
    av = _import_av()
    codec = _encoder(av) if av is not None else None
    if codec is None:
        path = stem.with_suffix(".gif")
        first, *rest = [Image.open(p).convert("RGB") for p in frames]
        duration = max(20, round(1000 / fps))  # ms per frame; GIF players floor smaller values
        atomic_write(path, lambda f: first.save(f, format="GIF", save_all=True, append_images=rest, duration=duration))
        log.warning("no video encoder (PyAV is not installed): wrote %s; for an mp4: %s", path, INSTALL_HINT)
        return path
    path = stem.with_suffix(".mp4")
    w, h = Image.open(frames[0]).size
    pad = ((0, h % 2), (0, w % 2), (0, 0))

    def encode(f: Any) -> None:
        with av.open(f, mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18"}  # visually lossless-ish
            for picture in frames:
                frame = av.VideoFrame.from_ndarray(np.pad(_pixels(picture), pad, mode="edge"), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())

    atomic_write(path, encode)
    return path


# ---- the clip ----------------------------------------------------------------------------------------------------


def _check_video_config(video: VideoConfig) -> None:
    if not video.input:
        raise NSTError("input is not set: give a video file or a folder of frames, e.g. input=clip.mp4")
    positive_counts(video, "first_steps", "steps")
    if video.max_frames is not None and video.max_frames <= 0:
        raise NSTError(f"max_frames={video.max_frames} is not valid: a positive number of frames, or null (all)")
    if video.fps is not None and not video.fps > 0:
        raise NSTError(f"fps={video.fps} is not valid: a positive frame rate, or null (the input's)")
    if video.resume:
        raise NSTError(
            "resume is not supported by nst_lightning.apps.video: rerun the clip (or resume one frame's folder)"
        )
    if any(value is not None for value in dataclasses.asdict(video.batch_sweep).values()):
        raise NSTError("batch_sweep is not supported by nst_lightning.apps.video: sweep with -m instead")


def frame_config(video: VideoConfig, content: Path, start: Path | None) -> Config:
    """The run of one frame: ``video`` without the video keys, on ``content``; from ``start`` (the previous stylised
    frame, warped), with the temporal loss toward it, or, for frame 0 (``start=None``), from ``init``."""
    frame = Config(**{f.name: copy.deepcopy(getattr(video, f.name)) for f in dataclasses.fields(Config)})
    if start is None:
        return dataclasses.replace(
            frame, content=str(content), steps=video.first_steps, temporal_weight=0.0, temporal_target=None
        )
    init = dataclasses.replace(frame.init, kind="image", path=str(start))
    return dataclasses.replace(frame, content=str(content), init=init, temporal_target=str(start))


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255.0)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _input_frames(video: VideoConfig, run_dir: Path, long_side: int) -> tuple[Path, list[Path], float]:
    """The clip's source, its frames as image files (a video decoded into run_dir/input) and the output's rate."""
    source = Path(video.input or "").expanduser()
    if source.is_dir():
        inputs, fps = folder_frames(source, video.max_frames), DEFAULT_FPS
    elif source.is_file():
        inputs, fps = decode_video(source, run_dir / "input", long_side, video.max_frames)
    else:
        raise NSTError(f"input '{video.input}' not found: give a video file or a folder of frames")
    return source, inputs, float(video.fps or fps)


@dataclass
class Clip:
    """What the frames stylised so far measure; pictures are RGB uint8 (H, W, 3), differences in [0, 1]."""

    stylised: list[Path] = dataclasses.field(default_factory=list)
    per_frame: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    temporal: list[float] = dataclasses.field(default_factory=list)  # mean |stylised_k - stylised_k-1|
    warped: list[float] = dataclasses.field(default_factory=list)  # mean |stylised_k - warp(stylised_k-1)|
    inputs: list[float] = dataclasses.field(default_factory=list)  # mean |input_k - input_k-1|
    previous_input: np.ndarray | None = None
    previous: np.ndarray | None = None
    stopped_by: str | None = None
    interrupted: bool = False

    def add(self, result: Path, current_input: np.ndarray, flow: np.ndarray | None, metrics: dict[str, Any]) -> None:
        current = _pixels(result)
        if self.previous is not None and self.previous_input is not None:
            self.temporal.append(_mean_abs(current, self.previous))
            self.inputs.append(_mean_abs(current_input, self.previous_input))
            if flow is not None:
                self.warped.append(_mean_abs(current, warp(self.previous, flow)))
        self.stylised.append(result)
        self.previous_input, self.previous = current_input, current
        self.per_frame.append({key: metrics.get(key) for key in ("loss_total", "loss_temporal", "steps", "seconds")})


def _stylise_frames(video: VideoConfig, inputs: list[Path], run_dir: Path, method: str, parts: Any) -> Clip:
    """Each frame in turn, from the previous stylised frame (warped along the flow where there is one)."""
    from nst_lightning.engine.run import run

    clip, long_side = Clip(), stage_sizes(video)[-1][0]
    for k, content in enumerate(inputs):
        folder = run_dir / "frames" / f"frame_{k:05d}"
        current_input = _small_frame(content, long_side)
        flow, start = None, clip.stylised[-1] if clip.stylised else None
        if clip.previous is not None and clip.previous_input is not None and method == "farneback":
            flow = backward_flow(current_input, clip.previous_input)
            warped = warp(clip.previous, flow)
            start = folder / "warped_previous.png"
            atomic_write(start, lambda f, warped=warped: Image.fromarray(warped).save(f, format="PNG"))
        metrics = run(frame_config(video, content, start), folder, parts=parts)
        if metrics.get("interrupted"):
            clip.interrupted, clip.stopped_by = True, metrics.get("stopped_by")
            break
        result = run_dir / "stylised" / f"{k:05d}.png"
        data = (folder / "result.png").read_bytes()
        atomic_write(result, lambda f, data=data: f.write(data))
        clip.add(result, current_input, flow, metrics)
        log.info("frame %d/%d: loss %.4g, %.1f s", k + 1, len(inputs), metrics["loss_total"], metrics["seconds"])
    return clip


def _summary(video: VideoConfig, source: Path, inputs: list[Path], fps: float, method: str, clip: Clip) -> dict:
    return {
        "input": str(source),
        "frames": len(clip.stylised),
        "frames_in_input": len(inputs),
        "fps": fps,
        "flow": method,
        "temporal_weight": video.temporal_weight,
        "first_steps": video.first_steps,
        "steps": video.steps,
        "size": list(clip.previous.shape[:2]) if clip.previous is not None else None,
        "loss_total": [m["loss_total"] for m in clip.per_frame],
        "loss_temporal": [m["loss_temporal"] for m in clip.per_frame],
        "per_frame": clip.per_frame,
        "temporal_difference": clip.temporal,  # mean |stylised_k - stylised_k-1|, pixels in [0, 1]
        "temporal_difference_mean": _mean(clip.temporal),
        "input_difference_mean": _mean(clip.inputs),  # the same for the input frames, for comparison
        "warped_difference": clip.warped,  # mean |stylised_k - warp(stylised_k-1)|: flicker beyond the motion
        "warped_difference_mean": _mean(clip.warped),
        "interrupted": clip.interrupted,
        "stopped_by": clip.stopped_by,
    }


def stylise_video(video: VideoConfig, run_dir: str | Path) -> dict[str, Any]:
    """Stylise the clip ``video.input`` into ``run_dir``; return the clip's metrics (also run_dir/metrics.json)."""
    from nst_lightning.engine.parts import build_parts
    from nst_lightning.util.files import write_json

    _check_video_config(video)
    method = flow_method(video.flow)
    first = frame_config(video, Path(video.input or ""), None)
    images = validate_run(first)  # the run's own checks, before any decoding
    parts = build_parts(first)  # once for every frame
    check_layers(images, parts.network)
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists():
        raise NSTError(f"{run_dir} already holds a metrics.json: pick another hydra.run.dir, nothing was overwritten")
    source, inputs, fps = _input_frames(video, run_dir, stage_sizes(video)[-1][0])
    log.info("%d frames from %s, flow: %s", len(inputs), source, method)
    started = time.perf_counter()
    clip = _stylise_frames(video, inputs, run_dir, method, parts)
    written = write_video(clip.stylised, run_dir / "stylised", fps) if clip.stylised else None
    seconds = time.perf_counter() - started
    summary = _summary(video, source, inputs, fps, method, clip)
    summary.update(seconds=seconds, seconds_per_frame=seconds / max(len(clip.stylised), 1))
    summary["video"] = written.name if written else None
    write_json(summary, run_dir / "metrics.json")
    if written:
        log.info("video: %s (%d frames, %.4g fps)", written, len(clip.stylised), fps)
    return summary


def _small_frame(path: Path, long_side: int) -> np.ndarray:
    """A frame as the run sees it (resized the same way), RGB uint8 (H, W, 3)."""
    from nst_lightning.inputs.images import load_image

    return load_image(str(path), long_side, "input frame").squeeze(0).permute(1, 2, 0).mul(255).round().byte().numpy()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="video")
def _app(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = stylise_video(OmegaConf.to_object(cfg), run_dir)  # type: ignore[arg-type]
    except KeyboardInterrupt as exc:  # a signal before a frame's first step (recorded: nst_lightning.util.interrupts)
        if full_error():
            raise
        log.warning("interrupted: the frames stylised so far are in %s (no video written)", run_dir / "stylised")
        sys.exit(128 + getattr(exc, "signum", 2))
    except SIGTERMException:
        log.error("stopped by SIGTERM: the frames done so far are in stylised/")
        sys.exit(143)
    except (NSTError, MisconfigurationException) as exc:
        user_error(exc)
    if summary["interrupted"]:
        log.warning("stopped early: the frames done so far are in stylised/ and %s", summary["video"])
        sys.exit(143 if summary["stopped_by"] == "SIGTERM" else 130)
    return _mean(summary["loss_total"])


def main() -> None:
    """``python -m nst_lightning.video input=clip.mp4 style=...`` (Hydra; ``--help``, ``--cfg job``, ``-m``)."""
    ours = not interrupts.installed()
    interrupts.install()  # a Ctrl-C at any moment stops the video, as it does a run (python -m installs it first)
    try:
        with video_schema():
            interrupts.check()
            _app()
    except KeyboardInterrupt as exc:
        if full_error():
            raise
        sys.stderr.write("interrupted while starting up: nothing was being stylised\n")
        sys.exit(128 + getattr(exc, "signum", 2))
    finally:
        if ours:
            interrupts.uninstall()


if __name__ == "__main__":
    main()
