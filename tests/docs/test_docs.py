"""The docs stay true: README.md keeps the set-up and test commands CI runs, every command shown in README.md and
the Getting-started page runs (at tiny sizes), every configuration key has a row with its default in the
configuration reference, and no text of the repository speaks of the project's own history.

Commands that cannot run here are checked another way that can fail: the GPU command is composed by Hydra
(``--cfg job``) where there is no CUDA; ``tensorboard`` must be installed and read the events the runs wrote;
``pip install`` and ``pytest`` must be the lines ``.ci/run`` runs; a ``bash`` script must exist and parse.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import cli, cli_in_process, make_painting, make_photo
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from nst_lightning.config.schema import conf_dir

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
GETTING_STARTED = REPO / "docs" / "getting-started.md"
CONFIG_PAGE = REPO / "docs" / "reference" / "configuration.md"

# The appended overrides that make a documented command a test: later overrides win in Hydra.
TINY = ["size=32", "steps=2", "snapshot_every=0", "metrics=false", "trainer.enable_progress_bar=false"]
CPU = ["trainer.accelerator=cpu"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ------------------------------------------------------------------------------------------------------------------
# Commands shown in the docs
# ------------------------------------------------------------------------------------------------------------------

COMMAND_STARTS = ("python -m nst_lightning", "pip install", "pytest", "tensorboard", "mkdocs", "bash ")


def shown_commands(page: Path) -> list[tuple[list[str], str]]:
    """Every command a page shows, in order: the lines of its ```bash blocks and the inline code spans that start
    like a command; each as (arguments as the shell splits them, the comment after it)."""
    commands = []
    in_block = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```bash" and not in_block
            continue
        if in_block:
            args = shlex.split(line, comments=True)
            comment = re.search(r"\s#\s*(.*)$", line)
            if args:
                commands.append((args, comment.group(1) if comment else ""))
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith(COMMAND_STARTS) and "<" not in span:
                    commands.append((shlex.split(span), ""))
    return commands


def overrides_of(args: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in args if "=" in arg and not arg.startswith("-"))


def write_images(args: list[str], cwd: Path) -> None:
    """The image files a command names, as small synthetic pictures in the working folder."""
    for value in overrides_of(args).values():
        for name in re.split(r"[\[\],]", value):
            name = name.strip().strip("'\"")
            if name.lower().endswith(IMAGE_SUFFIXES) and not (cwd / name).exists():
                (cwd / name).parent.mkdir(parents=True, exist_ok=True)
                painting = any(word in name for word in ("paint", "style", "starry", "scream"))
                (make_painting if painting else make_photo)(cwd / name)


def run_dirs(root: Path) -> list[Path]:
    """The folders below ``root`` that hold a run's result (a batch's images, a sweep's jobs, or root itself)."""
    return sorted(p.parent for p in root.rglob("result.png") if "snapshots" not in p.parts and "stages" not in p.parts)


def ci_lines() -> list[list[str]]:
    """The commands of .ci/run, split as the shell does."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [split for split in (shlex.split(line, comments=True) for line in lines) if split]


def _quiet(args: list[str]) -> list[str]:
    return [a for a in args if a != "-q"]  # CI installs quietly; the docs show pip's output


class Checker:
    """Runs or checks each command of one page, in order, in one working folder (so that the report reads the sweep
    made before it, resume continues the run stopped before it, and tensorboard reads the events written)."""

    def __init__(self, cwd: Path, page: Path) -> None:
        self.cwd, self.page, self.count = cwd, page, 0
        self.checked: list[str] = []

    def fail(self, args: list[str], why: str) -> None:
        pytest.fail(f"{self.page.name}: `{shlex.join(args)}`: {why}")

    def check(self, args: list[str], comment: str) -> None:
        self.count += 1
        write_images(args, self.cwd)
        head = " ".join(args[:3])
        if args[:2] == ["pip", "install"]:
            self.pip(args)
        elif args[0] == "pytest":
            self.pytest(args)
        elif args[0] == "tensorboard":
            self.tensorboard(args)
        elif args[0] == "mkdocs":
            self.mkdocs(args)
        elif args[0] == "bash":
            self.bash(args)
        elif head == "python -m nst_lightning.report":
            self.report(args)
        elif head == "python -m nst_lightning":
            self.nst(args[3:], comment)
        else:
            self.fail(args, "no check for this command: add one to tests/docs/test_docs.py")
        self.checked.append(shlex.join(args))

    # -- commands that cannot run inside a test: checked against what runs them ----------------------------------

    def pip(self, args: list[str]) -> None:
        """An install line is one that CI runs (.ci/run), and the extras it names exist."""
        if _quiet(args) not in [_quiet(line) for line in ci_lines()]:
            self.fail(args, ".ci/run does not run this install line: keep the two identical")
        extras = re.findall(r"\.\[([\w,]+)\]", " ".join(args))
        declared = set(_pyproject()["project"]["optional-dependencies"])
        for extra in ",".join(extras).split(",") if extras else []:
            if extra not in declared:
                self.fail(args, f"pyproject.toml has no extra '{extra}'")

    def pytest(self, args: list[str]) -> None:
        if args not in ci_lines():
            self.fail(args, ".ci/run does not run this test command: keep the two identical")
        assert "tests" in _pyproject()["tool"]["pytest"]["ini_options"]["testpaths"]

    def tensorboard(self, args: list[str]) -> None:
        """Not started (it serves until stopped): it is installed, and it reads the events the runs wrote there."""
        from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

        if shutil.which("tensorboard") is None and not (Path(sys.executable).parent / "tensorboard").exists():
            self.fail(args, "the tensorboard command is not installed")
        logdir = self.cwd / args[args.index("--logdir") + 1]
        mux = EventMultiplexer()
        mux.AddRunsFromDirectory(str(logdir))
        mux.Reload()
        runs = mux.Runs()
        if not runs:
            self.fail(args, f"no TensorBoard runs under {logdir} after the commands before it")
        for name, tags in runs.items():
            assert "loss/total" in tags["scalars"], (name, tags)

    def mkdocs(self, args: list[str]) -> None:
        """Not run here (CI builds the site with --strict): the config exists and the docs extra installs MkDocs."""
        assert (REPO / "mkdocs.yml").is_file()
        assert any(dep.startswith("mkdocs") for dep in _pyproject()["project"]["optional-dependencies"]["docs"])

    def bash(self, args: list[str]) -> None:
        """A script that makes figures for minutes or hours: it exists and bash parses it."""
        script = REPO / args[1]
        if not script.is_file():
            self.fail(args, f"{args[1]} does not exist")
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)

    # -- commands that run ----------------------------------------------------------------------------------------

    def report(self, args: list[str]) -> None:
        from nst_lightning.results.report import main as report_main

        folder = self.cwd / args[3]
        code = report_main([str(folder), *args[4:]])
        assert code == 0, args
        for name in ("grid.png", "losses.png", "summary.csv"):
            assert (folder / name).is_file(), name
        with (folder / "summary.csv").open() as f:
            assert len(list(csv.DictReader(f))) == len(run_dirs(folder))

    def nst(self, args: list[str], comment: str) -> None:
        overrides = overrides_of(args)
        if "--help" in args:
            proc = cli_in_process(*args)
            assert proc.returncode == 0 and "Groups" in proc.stdout, proc.stdout[-2000:]
        elif "--cfg" in args:
            self.composed(cli_in_process(*args), args)
        elif overrides.get("trainer.accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
            # No GPU here: Hydra must compose the command as written (the run itself needs CUDA).
            self.composed(cli(*args, "--cfg", "job", cwd=self.cwd), args)
        elif "resume" in overrides:
            self.resume(args, overrides)
        elif "Ctrl-C" in comment:
            self.interrupt(args, overrides)
        else:
            self.run(args, overrides)

    def composed(self, proc: subprocess.CompletedProcess, args: list[str]) -> None:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        for key, value in overrides_of(args).items():
            if key.startswith("hydra."):
                continue  # Hydra's own settings are not part of the job's configuration
            assert f"{key.rsplit('.', 1)[-1]}: {value}" in proc.stdout, (key, value, proc.stdout[-3000:])

    def tiny(self, args: list[str], overrides: dict[str, str]) -> list[str]:
        extra = TINY + CPU
        if "scales" in overrides:  # coarse to fine: two tiny stages
            extra += ["scales=[16,32]", "scale_steps=[1,1]"]
        if "-m" in args:
            if "hydra.sweep.dir" not in overrides:
                extra.append(f"hydra.sweep.dir=outputs/multirun/docs_{self.count}")
        elif "hydra.run.dir" not in overrides:
            extra.append(f"hydra.run.dir=outputs/runs/docs_{self.count}")
        return [*args, *extra]

    def folder(self, full: list[str]) -> Path:
        overrides = overrides_of(full)
        return self.cwd / overrides["hydra.sweep.dir" if "-m" in full else "hydra.run.dir"]

    def run(self, args: list[str], overrides: dict[str, str]) -> None:
        full = self.tiny(args, overrides)
        proc = cli_in_process(*full)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Traceback" not in output, output[-3000:]
        folder = self.folder(full)
        done = run_dirs(folder)
        assert done, f"no result.png under {folder}"
        assert not list(folder.rglob("failed"))
        if "-m" in args:  # a sweep: every job has its result
            jobs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
            assert len(jobs) >= 2 and all((job / "result.png").is_file() for job in jobs), jobs
        else:
            assert (folder / "metrics.json").is_file()
            assert list(folder.rglob("events.out.tfevents.*"))

    def interrupt(self, args: list[str], overrides: dict[str, str]) -> None:
        """What the comment promises: Ctrl-C keeps the image so far and a checkpoint (a real SIGINT, a real
        process: the entry point as a user starts it)."""
        if "hydra.run.dir" not in overrides:
            self.fail(args, "name the run folder (hydra.run.dir=) so that the resume command can find it")
        full = [*self.tiny(args, overrides), "steps=100000", "engine.checkpoint_every=1"]
        folder = self.folder(full)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("HYDRA_FULL_ERROR", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "nst_lightning", *full],
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not (folder / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert (folder / "last.ckpt").exists(), "no checkpoint after 120 s"
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, output[-3000:]
        assert (folder / "result.png").is_file() and (folder / "last.ckpt").is_file()
        assert "resume=" in output

    def resume(self, args: list[str], overrides: dict[str, str]) -> None:
        stopped = self.cwd / overrides["resume"]
        step = torch.load(stopped / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
        full = [*args, f"steps={step + 2}", "trainer.enable_progress_bar=false", *CPU]
        full.append(f"hydra.run.dir=outputs/runs/docs_{self.count}")  # only these keys may change on resume
        proc = cli_in_process(*full)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        metrics = OmegaConf.load(self.folder(full) / "metrics.json")
        assert metrics.steps == step + 2
        assert Path(metrics.resumed_from).resolve() == stopped.resolve()


def _pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_readme_keeps_the_set_up_and_test_commands_ci_runs():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert blocks[0].splitlines() == [
        'pip install "torch==2.14.1" "torchvision==0.29.1" -e ".[dev]"',
        "python -m nst_lightning",
    ]
    lines = [line for block in blocks for line in block.splitlines()]
    assert [line for line in lines if line.startswith(("pip ", "pytest"))] == [blocks[0].splitlines()[0], "pytest -q"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert 'pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[dev]"' in ci
    assert "pytest -q" in ci
    assert len(README.read_bytes()) <= 15 * 1024


@pytest.mark.parametrize("page", [README, GETTING_STARTED], ids=["README", "getting-started"])
def test_every_command_shown_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = shown_commands(page)
    assert len(commands) >= 5
    checker = Checker(tmp_path, page)
    for args, comment in commands:
        checker.check(args, comment)
    assert len(checker.checked) == len(commands)


# ------------------------------------------------------------------------------------------------------------------
# The configuration reference
# ------------------------------------------------------------------------------------------------------------------


def _compose(name: str, overrides: list[str] = (), hydra: bool = False) -> DictConfig:
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def config_groups() -> list[str]:
    """The groups Hydra finds (conf/ folders and registered nodes alike), but its own."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return [g for g in GlobalHydra.instance().config_loader().list_groups("") if g != "hydra"]


def group_options(group: str) -> list[str]:
    """A group's options as a user picks them: not the schema nodes the YAML files extend, not Hydra's plugins."""
    if group.startswith("hydra/"):
        return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    return sorted(o for o in options if not o.endswith("_schema"))


def leaves(node: DictConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf key of a config (dotted) and its value; keys starting with _ are Hydra's own (``_target_``)."""
    out: dict[str, Any] = {}
    for key in node:
        if str(key).startswith("_") or key == "hydra":
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and len(child) == 0:
            out[f"{prefix}{key}"] = {}  # a free-form node, empty by default (callbacks, extra_terms): a key itself
        elif isinstance(child, DictConfig):
            out.update(leaves(child, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = OmegaConf.to_container(child) if isinstance(child, ListConfig) else child._value()
    return out


@functools.cache
def default_choices() -> dict[str, Any]:
    """The option each group of the defaults list picks; a group outside it (``balanced_network``) is absent."""
    return OmegaConf.to_container(_compose("config", hydra=True).hydra.runtime.choices)  # type: ignore[return-value]


def pick(group: str, option: str) -> str:
    """The override that picks ``option``: a group outside the defaults list is appended (``+group=option``)."""
    return f"{group}={option}" if group in default_choices() else f"+{group}={option}"


def config_keys() -> dict[str, Any]:
    """The keys of the composed configuration under every option of every group, each with its default: the value
    in the plain configuration, else in the first option that has the key."""
    keys = leaves(_compose("config"))
    # they set other groups' keys: a key's default is its own group's
    presets = ("recipe", "experiment", "balanced_network")
    for group in sorted(config_groups(), key=lambda g: (g in presets, g)):
        for option in group_options(group):
            for key, value in leaves(_compose("config", [pick(group, option)])).items():
                keys.setdefault(key, value)
    return keys


def option_keys(group: str, option: str) -> dict[str, Any]:
    """The keys of one option's node under ``group.`` with that option's defaults: a ``_target_`` node has its
    constructor's keywords, so the same key can differ in default from one option to the next, or exist in one
    only (``style_loss.max_positions``: 1024 for mmd, 65536 for sliced_wasserstein; ``optimizer.eps``: adam's)."""
    composed = leaves(_compose("config", [pick(group, option)]))
    return {key: value for key, value in composed.items() if key.startswith(f"{group}.")}


def video_keys() -> dict[str, Any]:
    from nst_lightning.apps.video import video_schema

    with video_schema():
        return leaves(_compose("video"))


def reference_rows() -> dict[str, dict[str, tuple[str, str]]]:
    """{section heading: {key: (default cell, whole row)}} from the tables headed ``| key | default | ...``."""
    sections: dict[str, dict[str, tuple[str, str]]] = {}
    heading, in_table = "", False
    for line in CONFIG_PAGE.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("| key | default |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if in_table and re.fullmatch(r"`[^`]+`", cells[0]):
            sections.setdefault(heading, {})[cells[0].strip("`")] = (cells[1], line)
    return sections


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def same_value(documented: Any, actual: Any) -> bool:
    documented, actual = _plain(documented), _plain(actual)
    if isinstance(documented, list) and isinstance(actual, list):
        return len(documented) == len(actual) and all(map(same_value, documented, actual))
    if isinstance(documented, int | float) and isinstance(actual, int | float) and not isinstance(actual, bool):
        return math.isclose(documented, actual, rel_tol=1e-9)
    return documented == actual


def documented_default(cell: str) -> Any:
    """The default cell's first code span, read by Hydra's own override grammar (as a user would type it)."""
    match = re.search(r"`([^`]+)`", cell)
    assert match, f"a default must be a code span: {cell}"
    return OverridesParser.create().parse_override(f"key={match.group(1)}").value()


OPTION_HEADING = re.compile(r"`([\w/]+)=(\w+)`")


def option_sections(sections: dict[str, dict[str, tuple[str, str]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The sections headed by one group option (``### `style_loss=mmd```), taken out of ``sections``."""
    found = {}
    for heading in list(sections):
        if match := OPTION_HEADING.fullmatch(heading):
            found[(match.group(1), match.group(2))] = sections.pop(heading)
    return found


def test_every_group_option_with_keys_has_its_own_rows_with_its_defaults():
    """A group documented option by option: each option's section lists exactly the keys of its node, each with
    that option's default; an option without keys (``style_loss=gram``) needs no section."""
    by_option = option_sections(reference_rows())
    assert by_option, "no section headed by a group option (### `group=option`)"
    for group in sorted({group for group, _ in by_option}):
        for option in group_options(group):
            own = option_keys(group, option)
            rows = by_option.pop((group, option), {})
            assert sorted(rows) == sorted(own), f"the section `{group}={option}` must list exactly {sorted(own)}"
            wrong = [
                (k, cell, own[k]) for k, (cell, _) in rows.items() if not same_value(documented_default(cell), own[k])
            ]
            assert not wrong, f"`{group}={option}`: documented defaults that differ (key, row, actual): {wrong}"
    assert not by_option, f"sections for options that do not exist: {sorted(by_option)}"


def test_every_configuration_key_has_a_row_with_its_default():
    sections = reference_rows()
    video_section = sections.pop("Video keys")
    sections.pop("Groups")  # test_every_group_and_option_is_in_the_reference
    # the groups documented option by option: test_every_group_option_with_keys_has_its_own_rows_with_its_defaults
    by_option = tuple(f"{group}." for group, _ in option_sections(sections))
    rows = {key: row for section in sections.values() for key, row in section.items()}
    keys = config_keys()
    keys_here = {key: value for key, value in keys.items() if not key.startswith(by_option)}
    missing = sorted(set(keys_here) - set(rows))
    assert not missing, f"keys without a row in {CONFIG_PAGE.relative_to(REPO)}: {missing}"
    stale = sorted(set(rows) - set(keys_here))
    assert not stale, f"rows for keys the configuration does not have (or has option by option): {stale}"
    wrong = [
        (key, cell, keys[key]) for key, (cell, _) in rows.items() if not same_value(documented_default(cell), keys[key])
    ]
    assert not wrong, f"documented defaults that differ from the composed ones (key, row, actual): {wrong}"

    video = video_keys()
    own = {key: value for key, value in video.items() if key not in keys}
    assert sorted(own) == sorted(video_section), "the video table must list exactly the video command's own keys"
    for key, (cell, _) in video_section.items():
        assert same_value(documented_default(cell), own[key]), (key, cell, own[key])
    text = CONFIG_PAGE.read_text().split("## Video keys", 1)[1]
    for key in sorted(k for k in keys if k in video and not same_value(video[k], keys[k])):
        match = re.search(rf"`{re.escape(key)}` \(`([^`]+)`", text)
        assert match, f"the video section must give the video default of `{key}`: `{key}` (`{video[key]}`"
        assert same_value(documented_default(f"`{match.group(1)}`"), video[key]), (key, match.group(1))


def test_every_group_and_option_is_in_the_reference():
    groups = reference_rows()["Groups"]
    choices = default_choices()
    for group in (*config_groups(), "hydra/launcher"):
        assert group in groups, f"no row for the group {group}"
        cell, row = groups[group]
        default = choices.get(group)  # None: a group outside the defaults list, appended with +group=option
        assert same_value(documented_default(cell), default), (group, cell, default)
        for option in group_options(group):
            assert f"`{option}`" in row, f"{group}={option} is not in its row"


# ------------------------------------------------------------------------------------------------------------------
# No history in the repository's text
# ------------------------------------------------------------------------------------------------------------------

_WORD = "ses" + "sion"  # built from parts so that this file does not match its own pattern
HISTORY = re.compile(rf"\b{_WORD}s? #?\d+|\bthis {_WORD}\b|super" + r"seded|\bissues? #?\d+", re.IGNORECASE)
TEXT_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".sh", ".json", ".toml")


def test_no_text_speaks_of_the_projects_history():
    """Stages of the project's own making (a numbered stage, a replaced section, a tracker's numbers) mean
    nothing to a reader: a number says when and where it was measured; what changed is git's to keep."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    hits = []
    for name in listed.stdout.splitlines():
        path = REPO / name
        if not name.endswith(TEXT_SUFFIXES) or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if HISTORY.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not hits, "history in the repository's text:\n" + "\n".join(hits)


def test_the_history_pattern_finds_what_it_must():
    for text in [f"{_WORD.title()} 11 measurements", f"in this {_WORD}", "super" + "seded by", "(iss" + "ue 16)"]:
        assert HISTORY.search(text), text
    for text in ["_hparams_/session_start_info", "issues are welcome", "a sessionless run"]:
        assert not HISTORY.search(text), text
