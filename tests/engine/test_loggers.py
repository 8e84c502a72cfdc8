"""The logger group: each of Lightning's loggers receives a run's losses, its settings and its final values.

CSV always; MLflow and W&B (offline) where their packages are installed (the ``[dev]`` extra installs both).
"""

import csv
import importlib.util
import math

import pytest
from PIL import Image

from nst_lightning.engine.run import run


def _losses(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row.get(key)]


def test_csv_logger_gets_the_losses_and_final_values(make_cfg, tmp_path):
    metrics = run(make_cfg("logger=csv", "steps=4", "engine.log_every=1"), tmp_path / "run")
    logs = tmp_path / "run" / "logs"
    rows = list(csv.DictReader((logs / "metrics.csv").open()))
    total = _losses(rows, "loss/total")
    assert len(total) >= 4 and all(math.isfinite(v) and v > 0 for v in total)
    assert total[-1] < total[0]  # the optimiser lowered it
    final = _losses(rows, "final/loss_total")
    assert final == pytest.approx([metrics["loss_total"]], rel=1e-6)
    settings = (logs / "hparams.yaml").read_text()
    assert "content_layer: conv4_2" in settings and "ratio:" in settings
    assert not (tmp_path / "run" / "tensorboard").exists()  # only the logger asked for
    assert Image.open(tmp_path / "run" / "result.png").size == (32, 27)


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (the [mlflow] extra)")
def test_mlflow_logger_keeps_a_run_with_its_metrics_params_and_image(make_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    metrics = run(make_cfg("logger=mlflow", "steps=3", "engine.log_every=1"), tmp_path / "run")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "nst_lightning"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.data.metrics["final/loss_total"] == pytest.approx(metrics["loss_total"], rel=1e-6)
    history = client.get_metric_history(found.info.run_id, "loss/total")
    assert len(history) >= 3 and all(m.value > 0 for m in history)
    assert found.data.params["content_layer"] == "conv4_2"
    images = [a.path for a in client.list_artifacts(found.info.run_id, "result")]
    assert any(path.endswith(".png") for path in images), images


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (the [wandb] extra)")
def test_wandb_logger_offline_writes_its_run_beside_the_result(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(make_cfg("logger=wandb", "logger.offline=true", "steps=3"), tmp_path / "run")
    runs = list((tmp_path / "run" / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "run" / "logs").rglob("*"))[:20]
    (data,) = runs[0].glob("*.wandb")
    assert data.stat().st_size > 0
    assert (tmp_path / "run" / "result.png").is_file()


def test_a_missing_logger_package_is_one_line_naming_its_extra(make_cfg, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_mlflow)
    from nst_lightning.util.errors import NSTError

    with pytest.raises(NSTError) as info:
        run(make_cfg("logger=mlflow"), tmp_path / "run")
    assert str(info.value) == 'logger=mlflow needs the mlflow package: pip install "nst-lightning[mlflow]"'
