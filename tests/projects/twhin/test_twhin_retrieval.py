"""Candidate retrieval: the best items by inner product, never an item the query has already seen."""
import numpy as np
import pytest
import torch

from tml.projects.twhin import ann_index
from tml.projects.twhin.retrieval import excluded_lists, retrieve


def _case():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(200, 8)).astype(np.float32)


def test_exact_retrieval_is_the_top_k_without_seen_items():
    queries, items = _case()
    scores = queries @ items.T
    seen = [np.argsort(-scores[q])[: q % 7] for q in range(30)]  # each query has seen its q % 7 best items
    found, values = retrieve(queries, items, 10, seen, "dot")
    for q in range(30):
        allowed = [i for i in np.argsort(-scores[q]) if i not in set(seen[q].tolist())]
        assert found[q].tolist() == allowed[:10]
        np.testing.assert_allclose(values[q], scores[q, allowed[:10]], rtol=1e-5)
        assert not set(found[q].tolist()) & set(seen[q].tolist())


def test_fewer_items_than_k_are_padded():
    queries, items = _case()
    found, values = retrieve(queries[:2], items[:5], 8, [np.array([0, 1]), np.array([], dtype=np.int64)], "dot")
    assert sorted(found[0, :3].tolist()) == [2, 3, 4] and (found[0, 3:] == -1).all() and np.isneginf(values[0, 3:]).all()
    assert sorted(found[1, :5].tolist()) == [0, 1, 2, 3, 4] and (found[1, 5:] == -1).all()


def test_excluded_lists_group_pairs_by_query():
    lists = excluded_lists(np.array([5, 1, 9]), np.array([1, 5, 1, 5, 1]), np.array([3, 2, 3, 7, 0]))
    assert [x.tolist() for x in lists] == [[2, 7], [0, 3], []]


def test_index_retrieval_excludes_seen_items_too():
    pytest.importorskip("faiss")
    queries, items = _case()
    index, _ = ann_index.build_index(items, "dot", "exact")
    scores = queries @ items.T
    seen = [np.argsort(-scores[q])[:5] for q in range(30)]
    found, _ = retrieve(queries, items, 10, seen, "dot", index)
    exact, _ = retrieve(queries, items, 10, seen, "dot")
    np.testing.assert_array_equal(found, exact)


@pytest.mark.parametrize("operator", ["translation", "dot", "diagonal", "complex_diagonal"])
@pytest.mark.parametrize("relation_aware", [False, True])
def test_relation_queries_rank_items_as_the_model_scores_them(operator, relation_aware):
    from tml.projects.twhin.models.config import TwhinModelConfig
    from tml.projects.twhin.models.models import TwhinModel
    from tml.projects.twhin.retrieval import relation_queries

    torch.manual_seed(0)
    tables = [{"name": name, "num_embeddings": 30, "embedding_dim": 8, "optimizer": {"sgd": {"lr": 0.1}}}
              for name in ("user", "movie")]
    config = TwhinModelConfig(
        embeddings={"tables": tables}, relation_aware=relation_aware,
        relations=[{"name": "liked", "lhs": "user", "rhs": "movie", "operator": operator},
                   {"name": "other", "lhs": "movie", "rhs": "user", "operator": operator}],
        translation_optimizer={"sgd": {"lr": 0.1}})
    model = TwhinModel(config, None, device="cpu")
    if model.all_trans_embs is not None:
        with torch.no_grad():
            model.all_trans_embs.normal_()
    users, movies = torch.randn(4, 8), torch.randn(30, 8)
    with torch.no_grad():
        expected = torch.stack([model.score(users[i].expand(30, 8), torch.zeros(30, dtype=torch.long), movies)
                                for i in range(4)]).numpy()
    vectors = None if model.all_trans_embs is None else model.all_trans_embs.detach().numpy()
    forward = None if vectors is None else vectors[0]
    reverse = None if vectors is None or not relation_aware else vectors[2]
    queries, _ = relation_queries(users.numpy(), operator, forward, reverse)
    got = queries @ movies.numpy().T
    # equal up to a per-user constant (the translation's u . r): the same ranking of the items
    np.testing.assert_allclose(got - got[:, :1], expected - expected[:, :1], rtol=1e-4, atol=1e-4)
    if operator == "complex_diagonal" or relation_aware and operator == "translation":
        assert not np.allclose(np.argsort(-got, 1), np.argsort(-(users.numpy() @ movies.numpy().T), 1))


def test_the_retrieval_config_is_movielens_yaml_with_reciprocal_relations_softmax_and_uniform_negatives():
    from pathlib import Path

    from tml.core.config import load_config_from_yaml
    from tml.projects.twhin.config import TwhinConfig

    folder = Path(__file__).resolve().parents[3] / "projects/twhin/config"
    base = load_config_from_yaml(TwhinConfig, str(folder / "movielens.yaml"))
    retrieval = load_config_from_yaml(TwhinConfig, str(folder / "movielens_retrieval.yaml"))
    assert retrieval.model.relation_aware and retrieval.model.loss.kind.value == "softmax"
    assert retrieval.model.relations == base.model.relations
    negatives = {"in_batch_negatives": 0, "global_negatives": 200}
    assert retrieval.train_data == base.train_data.model_copy(update=negatives)
    assert retrieval.model.embeddings == base.model.embeddings


@pytest.mark.parametrize("operator", ["translation", "dot", "diagonal", "complex_diagonal"])
def test_model_queries_give_the_models_score_itself(operator, tmp_path):
    """x . q + b is the model's score of (u, liked, x) exactly, bias included (the ranker's input)."""
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tml.projects.twhin.models.config import TwhinModelConfig
    from tml.projects.twhin.models.models import TwhinModel
    from tml.projects.twhin.retrieval import model_queries

    torch.manual_seed(1)
    tables = [{"name": name, "num_embeddings": 30, "embedding_dim": 8, "optimizer": {"sgd": {"lr": 0.1}}}
              for name in ("user", "movie")]
    relations = [{"name": "liked", "lhs": "user", "rhs": "movie", "operator": operator},
                 {"name": "other", "lhs": "movie", "rhs": "user", "operator": operator}]
    config = TwhinModelConfig(embeddings={"tables": tables}, relations=relations,
                              translation_optimizer={"sgd": {"lr": 0.1}})
    model = TwhinModel(config, None, device="cpu")
    vectors = np.zeros((2, 8), np.float32)
    if model.all_trans_embs is not None:
        with torch.no_grad():
            model.all_trans_embs.normal_()
        vectors = model.all_trans_embs.detach().numpy()
    pq.write_table(pa.table({"name": ["liked", "other"], "vector": pa.array(vectors.tolist(), pa.list_(pa.float32()))}),
                   tmp_path / "relations.parquet")
    users, movies = torch.randn(4, 8), torch.randn(30, 8)
    with torch.no_grad():
        expected = torch.stack([model.score(users[i].expand(30, 8), torch.zeros(30, dtype=torch.long), movies)
                                for i in range(4)]).numpy()
    twhin = SimpleNamespace(model=config)
    query, bias = model_queries(users.numpy(), str(tmp_path), twhin, "liked", ("user", "movie"))
    np.testing.assert_allclose(query @ movies.numpy().T + bias[:, None], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="connects movie -> user, not user -> movie"):
        model_queries(users.numpy(), str(tmp_path), twhin, "other", ("user", "movie"))
    with pytest.raises(KeyError, match="'nope' is not a relation"):
        model_queries(users.numpy(), str(tmp_path), twhin, "nope", ("user", "movie"))
