"""A TwHIN table initialised from another TwHIN run's checkpoint through the config."""
from __future__ import annotations

import pytest
import torch

from tml.common.checkpointing import load_model_weights
from tml.projects.twhin.data.generate_random_graph import write_random_graph
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
from tml.common.entry_point import load_command_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.run import build_parser, main
from twhin_helpers import CONFIG_DIR

LOCAL = str(CONFIG_DIR / "local.yaml")
TABLES = {"user": 1000, "tweet": 500}
RELATIONS = [(name, "user", "tweet") for name in ("fav", "reply", "retweet", "magic_recs")]


def _arguments(graph: str, save_dir: str, *extra: str) -> list[str]:
    settings = [f"train_data.data_root={graph}/*.parquet", "validation_data=null", "train_data.limit=1800",
                "training.num_train_steps=2", "training.checkpoint_every_n=2", "training.train_log_every_n=2", *extra]
    return ["--config_yaml_path", LOCAL, "--save_dir", save_dir] + [a for s in settings for a in ("--set", s)]


def _table(save_dir: str, arguments: list[str], name: str) -> torch.Tensor:
    model = TwhinModelAndLoss(TwhinModel(load_command_config(TwhinConfig, build_parser().parse_args(arguments)).model, device="cpu"))
    load_model_weights(model, f"{save_dir}/2")
    (weight,) = [value for key, value in model.state_dict().items() if key.endswith(f"embedding_bags.{name}.weight")]
    return weight


@pytest.mark.slow
def test_user_table_starts_from_a_previous_run(tmp_path, capsys):
    graph = str(tmp_path / "graph")
    write_random_graph(graph, TABLES, RELATIONS, 2000, num_files=2, seed=3)
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    first_arguments = _arguments(graph, first)
    assert main(first_arguments) == 0
    pretrained = f"model.embeddings.tables.0.pretrained={{emb_name: user, embedding_snapshot_uri: '{first}'}}"
    second_arguments = _arguments(graph, second, pretrained, "model.embeddings.tables.0.optimizer={sgd: {lr: 1.0e-12}}")
    assert main(second_arguments) == 0
    assert f"table 'user': 1000 of 1000 rows from checkpoint {first}/2 table 'user'; 0 rows" in capsys.readouterr().out
    # With a learning rate of 1e-12 the second run's user table stays the first run's.
    torch.testing.assert_close(_table(second, second_arguments, "user"), _table(first, first_arguments, "user"),
                               rtol=0, atol=1e-6)
