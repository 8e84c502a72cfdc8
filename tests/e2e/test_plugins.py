"""A researcher's own style statistic and network, in their own files and config folder, with no edit to the
package: they run, sweep and report like the built-in ones (the docs' "Writing your own" tutorial, step by step)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import cli, make_painting, make_photo

MY_LOSS = '''
import torch
from nst_lightning.model.statistics import StyleStatistic


class ChannelMeans(StyleStatistic):
    """|mean_x - mean_s|^p over the channels: only how much of each feature, not where nor how together."""

    def __init__(self, style, *, power: float = 2.0):
        super().__init__()
        self.power = power
        self.register_buffer("target", style.flatten(2).mean(2)[0])

    def summarise(self, features, mask=None, region=None):
        return {"sum": features.flatten(2).sum(2), "count": torch.full((1, 1), float(features[0, 0].numel()))}

    def loss(self, summary):
        return (summary["sum"] / summary["count"] - self.target).abs().pow(self.power).mean(1)
'''

MY_NETWORK = '''
import torch
import torchvision
from torch import nn
from nst_lightning.model.network import FeatureNetwork


class Alex(FeatureNetwork):
    """torchvision's AlexNet layers (random weights from a seed: nothing to download), named conv1 ... conv5."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        stages, n = [], 0
        for module in torchvision.models.alexnet(weights=None).features:
            if isinstance(module, nn.Conv2d):
                n += 1
                stages.append((f"conv{n}", nn.Sequential(module)))
            elif isinstance(module, nn.ReLU):
                stages[-1][1].append(module)
            else:
                stages.append((f"pool{n}", module))
        super().__init__(stages)
'''


def _project(tmp_path: Path) -> Path:
    """The researcher's folder: two modules and a config folder with a node for each."""
    (tmp_path / "my_losses.py").write_text(MY_LOSS)
    (tmp_path / "my_networks.py").write_text(MY_NETWORK)
    conf = tmp_path / "my_conf"
    (conf / "style_loss").mkdir(parents=True)
    (conf / "network").mkdir()
    (conf / "style_loss" / "channel_means.yaml").write_text(
        textwrap.dedent("""\
            _target_: my_losses.ChannelMeans
            _partial_: true
            power: 2.0
        """)
    )
    (conf / "network" / "alex.yaml").write_text("_target_: my_networks.Alex\nseed: ${seed}\n")
    make_photo(tmp_path / "photo.png", 96, 72)
    make_painting(tmp_path / "painting.png", 64)
    return conf


def _common(tmp_path: Path, conf: Path) -> list[str]:
    return [
        f"hydra.searchpath=[file://{conf}]",
        "content=photo.png",
        "style=painting.png",
        "size=96",
        "steps=2",
        "snapshot_every=0",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
    ]


def test_my_style_loss_runs_sweeps_and_reports_like_a_built_in_one(tmp_path):
    conf = _project(tmp_path)
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m", *_common(tmp_path, conf), "style_loss=gram,channel_means", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    mine = json.loads((sweep / "1" / "metrics.json").read_text())
    assert mine["loss_style"] > 0 and set(mine["loss_style_layers"]) == {
        "conv1_1",
        "conv2_1",
        "conv3_1",
        "conv4_1",
        "conv5_1",
    }
    recorded = (sweep / "1" / ".hydra" / "config.yaml").read_text()
    assert "_target_: my_losses.ChannelMeans" in recorded and "power: 2.0" in recorded
    report = subprocess.run(
        [sys.executable, "-m", "nst_lightning.report", str(sweep)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 2 and {row["run"] for row in rows} == {"0", "1"}
    assert (sweep / "grid.png").is_file()


def test_my_style_loss_takes_its_options_from_the_command_line(tmp_path):
    conf = _project(tmp_path)
    losses = {}
    for power in (1.0, 2.0):
        out = tmp_path / f"power{power}"
        proc = cli(
            *_common(tmp_path, conf),
            "style_loss=channel_means",
            f"style_loss.power={power}",
            "steps=1",
            f"hydra.run.dir={out}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[power] = json.loads((out / "metrics.json").read_text())["loss_style"]
    assert losses[1.0] != losses[2.0]
    bad = cli(
        *_common(tmp_path, conf), "style_loss=channel_means", "style_loss.powr=3", f"hydra.run.dir={out}2", cwd=tmp_path
    )
    assert bad.returncode != 0 and "powr" in bad.stdout + bad.stderr and "Traceback" not in bad.stdout + bad.stderr


def test_my_network_runs_with_its_own_layer_names(tmp_path):
    conf = _project(tmp_path)
    out = tmp_path / "alex"
    layers = ["network=alex", "content_layer=conv4", "style_layers=[conv1,conv2,conv3]", "ratio=1e-2"]
    proc = cli(*_common(tmp_path, conf), *layers, f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["loss_style_layers"]) == {"conv1", "conv2", "conv3"} and metrics["loss_content"] > 0
    assert (out / "result.png").is_file()
    wrong = cli(*_common(tmp_path, conf), "network=alex", f"hydra.run.dir={tmp_path / 'wrong'}", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "error: unknown content layer 'conv4_2'; valid layers: conv1, pool1, conv2" in wrong.stdout + wrong.stderr
