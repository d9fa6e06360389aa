"""torch.export of the Heavy Ranker for serving (projects/home/recap/export.py): parity with eager."""
import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.testing_utils import run_on_ranks
from tml.projects.home.recap import export
from tml.projects.home.recap.candidates import CandidateReader
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel

from rank_fns_recap_score import train_then_predict
from recap_model_builders import (
    INPUT_SHAPES,
    LARGE_TABLES,
    all_inputs_config,
    data_config,
    full_batch,
    model_config,
    model_inputs,
)
from recap_scoring_fixtures import load_setup_config, make_setup

TOLERANCE = 1e-5


def _eager(model, fields):
    with torch.no_grad():
        return model(**model_inputs(fields))


def _trained_looking(model: MultiTaskRankingModel) -> MultiTaskRankingModel:
    """Move BatchNorm running statistics off their initial values, then freeze for serving."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(**model_inputs(full_batch(16, seed=100 + seed)))
    return model.eval()


# torch.export.save notes that some saved tensors are views (DLRM); the reloaded program's outputs
# are compared below, so the note needs no action.
@pytest.mark.filterwarnings("ignore:No complete tensor found in the group")
@pytest.mark.parametrize(
    "architecture, multi_task_type",
    [("mask_net_parallel", "share_all"), ("mask_net_serial", "share_partial"), ("dcn", "share_none"), ("dlrm", "share_all")],
)
def test_exported_file_matches_the_eager_model_on_random_batches(tmp_path, architecture, multi_task_type):
    torch.manual_seed(0)
    rates = {"recap__engagement__is_replied": (0.5, 0.1)}
    model = _trained_looking(MultiTaskRankingModel(INPUT_SHAPES, all_inputs_config(architecture, multi_task_type), data_config(**rates)))
    path = str(tmp_path / "ranker.pt2")
    export.export_to_file(model, full_batch(8, seed=1), path)

    ranker = export.ExportedRanker(path)
    assert ranker.sparse_keys == list(LARGE_TABLES)
    assert ranker.input_names == [*export.DENSE_INPUTS, "user_embedding", *export.SPARSE_INPUTS]
    for batch_size, seed in [(8, 2), (3, 3), (1, 4), (37, 5)]:
        fields = full_batch(batch_size, seed=seed)
        expected = _eager(model, fields)
        actual = ranker(fields)
        for name in export.OUTPUTS:
            assert actual[name].shape == (batch_size, 2)
            assert float((actual[name] - expected[name]).abs().max()) < TOLERANCE, name


def test_sparse_keys_are_matched_by_name_and_rows_may_have_no_ids(tmp_path):
    torch.manual_seed(0)
    large = {"tables": [{"name": n, "num_embeddings": s, "embedding_dim": 4} for n, s in LARGE_TABLES.items()],
             "optimizer": {"init_learning_rate": 0.1}}
    model = MultiTaskRankingModel(INPUT_SHAPES, model_config(large_embeddings=large), data_config()).eval()
    path = str(tmp_path / "ranker.pt2")
    export.export_to_file(model, full_batch(4, seed=0), path)
    ranker = export.ExportedRanker(path)

    fields = full_batch(4, seed=7)
    # Keys in the other order; row 1 has no item ids and row 2 no user ids.
    fields["sparse_features"] = KeyedJaggedTensor.from_lengths_sync(
        keys=["item_id", "user_id"],
        values=torch.tensor([3, 4, 5, 6, 1, 2, 7, 8, 9]),
        lengths=torch.tensor([2, 0, 1, 1, 2, 1, 0, 2], dtype=torch.int32),
    )
    expected = _eager(model, fields)["logits"]
    assert float((ranker(fields)["logits"] - expected).abs().max()) < TOLERANCE
    no_ids = dict(fields, sparse_features=KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id", "item_id"], values=torch.zeros(0, dtype=torch.int64), lengths=torch.zeros(8, dtype=torch.int32)))
    assert float((ranker(no_ids)["logits"] - _eager(model, no_ids)["logits"]).abs().max()) < TOLERANCE


def test_model_without_large_embeddings_has_only_dense_inputs(tmp_path):
    torch.manual_seed(0)
    model = MultiTaskRankingModel(INPUT_SHAPES, model_config(), data_config()).eval()
    path = str(tmp_path / "dense.pt2")
    export.export_to_file(model, full_batch(1, seed=0), path)  # a 1-row example is padded for tracing
    ranker = export.ExportedRanker(path)
    assert ranker.input_names == [*export.DENSE_INPUTS, "user_embedding"] and ranker.sparse_keys == []
    fields = full_batch(5, seed=9)
    assert float((ranker(fields)["probabilities"] - _eager(model, fields)["probabilities"]).abs().max()) < TOLERANCE
    with pytest.raises(ValueError, match="the batch has no 'user_embedding', which the exported model needs"):
        ranker(dict(fields, user_embedding=torch.empty(0, 0)))


def test_loader_rejects_programs_it_did_not_write(tmp_path):
    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    path = str(tmp_path / "other.pt2")
    torch.export.save(torch.export.export(Double(), (torch.ones(2),)), path)
    with pytest.raises(ValueError, match="without tml_serving.json; it was not written by tml's export"):
        export.ExportedRanker(path)


def test_command_line_exports_a_checkpoint_that_serves_like_the_trained_model(tmp_path):
    setup = make_setup(str(tmp_path / "setup"))
    (predictions,) = run_on_ranks(train_then_predict, 1, setup["config_path"], setup["candidates"], timeout_s=120)
    output = str(tmp_path / "served.pt2")
    assert export.main(["--config_path", setup["config_path"], "--checkpoint", setup["save_dir"], "--output", output]) == 0

    ranker = export.ExportedRanker(output)
    assert ranker.sparse_keys == ["tweet_ids"]
    config = load_setup_config(setup["config_path"])
    reader = CandidateReader(config.train_data, setup["candidates"], sparse_feature_names=ranker.sparse_keys, batch_rows=16)
    served = np.concatenate([ranker(batch)["calibrated_probabilities"].numpy() for _, batch in reader])
    assert np.abs(served - predictions).max() < TOLERANCE
