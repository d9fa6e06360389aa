"""Validation metrics of the Heavy Ranker: per-stratum metrics from `model.stratifiers` and the
console table that shows them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tml.core.config import ConfigError, load_config_from_yaml
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.embedding.config import StratifierConfig
from tml.projects.home.recap.metrics import build_metrics_factory, format_results
from tml.projects.home.recap.model.config import ModelConfig

TASKS = ["fav", "reply"]
REPO_ROOT = Path(__file__).resolve().parents[4]
LOCAL_YAML = REPO_ROOT / "projects" / "home" / "recap" / "config" / "local.yaml"


def _data_config() -> RecapDataConfig:
    return RecapDataConfig.model_validate(
        {"inputs": "x/*.parquet", "global_batch_size": 4, "seg_dense_schema": {"schema_path": "s.json"},
         "tasks": {task: {} for task in TASKS}}
    )


def _outputs() -> dict:
    """Eight examples; discrete column 1 ("surface") is 0, 1 or 2."""
    probabilities = torch.tensor([[0.9, 0.2], [0.1, 0.8], [0.7, 0.3], [0.4, 0.6],
                                  [0.8, 0.1], [0.3, 0.9], [0.6, 0.4], [0.2, 0.7]])
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0], [1, 1], [0, 1], [0, 0], [1, 1]]).float()
    surface = torch.tensor([1, 1, 2, 2, 1, 0, 2, 1])
    return {
        "probabilities": probabilities,
        "logits": torch.logit(probabilities),
        "labels": labels,
        "weights": torch.ones_like(labels),
        "task_names": TASKS,
        "loss": torch.tensor(0.5),
        "stratifiers": {"home": surface, "search": surface},
    }


def _auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of (positive, negative) pairs ranked correctly, ties counted half."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).float() + 0.5 * (positives[:, None] == negatives[None, :]).float()
    return wins.mean().item()


def test_each_stratum_gets_every_task_metric_over_its_rows_only():
    strata = [StratifierConfig(name="home", index=1, value=1), StratifierConfig(name="search", index=1, value=2)]
    metrics = build_metrics_factory(TASKS, {"validation": _data_config()}, strata)("validation")
    outputs = _outputs()
    metrics.update(outputs)
    results = {key: float(value) for key, value in metrics.compute().items()}
    surface = outputs["stratifiers"]["home"]
    for name, value in (("home", 1), ("search", 2)):
        rows = surface == value
        for column, task in enumerate(TASKS):
            labels, scores = outputs["labels"][rows, column], outputs["probabilities"][rows, column]
            assert results[f"ctr/{task}/{name}"] == pytest.approx(labels.mean().item())
            assert results[f"count/{task}/{name}"] == labels.sum().item()
            if 0 < labels.sum() < len(labels):
                assert results[f"auroc/{task}/{name}"] == pytest.approx(_auroc(scores, labels))
            baseline = torch.nn.functional.binary_cross_entropy(labels.mean().expand_as(labels), labels)
            model = torch.nn.functional.binary_cross_entropy(scores, labels)
            assert results[f"rce/{task}/{name}"] == pytest.approx(100 * (1 - model / baseline).item(), rel=1e-4)
    # The unstratified metrics still see all eight rows.
    assert results["ctr/fav"] == pytest.approx(0.5)
    assert results["auroc/fav"] == pytest.approx(_auroc(outputs["probabilities"][:, 0], outputs["labels"][:, 0]))


def test_console_table_lists_each_stratum_under_its_task():
    results = {"validation": {"auroc/fav": 0.7, "rce/fav": 3.0, "auroc/reply": 0.6, "auroc/fav/home": 0.8,
                              "auroc/reply/home": 0.5, "rce/fav/home": 4.0, "loss": 0.4}}
    lines = format_results(results).splitlines()
    assert lines[0] == "validation set 'validation' (loss 0.4000)"
    assert [line.split("  ")[0].strip() for line in lines[2:]] == ["fav", "fav [home]", "reply", "reply [home]"]
    assert "0.8000" in lines[3] and "4.0000" in lines[3]


def test_stratifier_names_must_be_unique_and_tag_safe():
    tower = {"mlp_config": {"layer_sizes": [1]}}
    with pytest.raises(ValueError, match=r"stratifier names must be unique .* repeated: \['home'\]"):
        ModelConfig.model_validate({"tasks": {"fav": tower}, "stratifiers": [
            {"name": "home", "index": 0, "value": 1}, {"name": "home", "index": 0, "value": 2}]})
    with pytest.raises(ValueError, match="name"):
        StratifierConfig(name="home page", index=0, value=1)


def test_main_reports_stratified_metrics_in_tensorboard_and_the_final_table(tmp_path, monkeypatch, capsys):
    """Through the entry point and a config's `model.stratifiers`: the per-stratum CTR of the held-out
    file equals the one computed from the file itself."""
    import numpy as np
    import pyarrow.parquet as pq
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.generate_random_data import generate_random_data
    from tml.projects.home.recap.main import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TML_BASE", str(REPO_ROOT))
    config = load_config_from_yaml(RecapConfig, LOCAL_YAML)
    data_dir = tmp_path / "tmp" / "tml" / "recap_local" / "data"
    generate_random_data(config.train_data, str(data_dir), n_examples=640, num_files=10, rows_per_row_group=32)
    held_out = pq.read_table(data_dir / "part-00009.parquet")
    discrete = np.array(held_out.column("local_discrete__segdense_vals").to_pylist())[:, 3]
    value = int(np.bincount(discrete).argmax())  # the most frequent value: a stratum with rows
    assert (discrete == value).sum() >= 2
    fav = np.array(held_out.column("recap.engagement.is_favorited").to_pylist()).reshape(-1)
    expected_ctr = fav[discrete == value].mean()

    save_dir = tmp_path / "run"
    overrides = [
        "training.num_train_steps=2", "training.checkpoint_every_n=2", "training.eval_log_every_n=2",
        "training.num_eval_steps=4",  # 4 x 16 rows: the whole held-out file
        "train_data.global_batch_size=16",
        *[f'validation_data."{name}".global_batch_size=16'
          for name in ("validation", "train", "recap.engagement.is_replied")],
        f"model.stratifiers=[{{name: surface, index: 3, value: {value}}}]",
        f"training.save_dir={save_dir}",
    ]
    args = ["--config_path", str(LOCAL_YAML)] + [item for o in overrides for item in ("--set", o)]
    assert main(args) == 0
    accumulator = EventAccumulator(str(save_dir / "tensorboard" / "eval_validation"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    task = "recap.engagement.is_favorited"
    assert {f"auroc/{task}/surface", f"rce/{task}/surface", f"ctr/{task}/surface"} <= tags
    logged = accumulator.Scalars(f"ctr/{task}/surface")
    assert [event.step for event in logged] == [2]
    assert logged[0].value == pytest.approx(expected_ctr)
    table = capsys.readouterr().out.split("Final evaluation:")[1]
    assert f"{task} [surface]" in table
