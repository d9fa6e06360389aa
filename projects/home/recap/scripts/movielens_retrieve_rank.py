"""Retrieve, then rank, on MovieLens-100k: TwHIN retrieval, Heavy Ranker scoring, and their evaluation.

    python -m tml.projects.home.recap.scripts.movielens_retrieve_rank \
        --embeddings TWHIN_EXPORT --twhin_data ~/tmp/tml/twhin/movielens \
        --config_path projects/home/recap/config/movielens.yaml --checkpoint SAVE_DIR \
        --output ranked.parquet [--k 100] [--popular_k 0] [--data_dir ~/tmp/tml/movielens] \
        [--twhin_config projects/twhin/config/movielens.yaml --relation liked]

For every user with ratings both before and after the time split (the users a recommender can be
judged on at that moment):
1. retrieve: the `--k` movies whose TwHIN vectors have the largest inner product with the user's
   query, leaving out every movie the user rated in the training period; the query is the user's
   vector, or with `--twhin_config` the `--relation`'s query as the trained model ranks movies (its
   operator, relation vectors and `relation_aware`; see `tml.projects.twhin.retrieval`); a faiss
   index saved beside the export (`embeddings index --metric dot`) is used when present;
   `--popular_k P` adds the P most-rated movies of the training period the user has neither rated
   nor been retrieved (two candidate sources, as production retrieval mixes several; they follow
   TwHIN's list in the retrieval order);
2. rank: build the Heavy Ranker's input row of every (user, candidate) as of the split
   (`prepare_movielens.candidate_columns`; with the TwHIN columns when the config's schema has
   them; with `--twhin_score`, the TwHIN model's own score of (user, --relation, movie) appended to
   the continuous block as `twhin_features --score` writes it, for a ranker trained with that input,
   e.g. config/movielens_twhin_score.yaml), score it with the trained model (per-task calibrated
   probabilities and the weighted score of `--weights`), and order each user's candidates by that
   score; with `--fusion_c C`, also
   order them by the reciprocal-rank fusion of the ranker's and the retrieval's orders,
   1 / (C + ranker rank) + 1 / (C + retrieval rank) (the `fused` list);
3. evaluate against the movies the user liked (4-5 stars) after the split: recall@10, recall@50
   and NDCG@10 of the retrieval order, the ranked order and a most-popular list (the most-rated
   movies of the training period, minus those the user rated). The users are split at random
   (seed `--split_seed`) into two halves, `tune` (to choose settings on) and `test` (to report);
   the metrics of both halves and of all users are computed, with NDCG@10's standard error over
   users, and the mean difference of NDCG@10 between lists on the same users (ranked - popular,
   ranked - retrieval, fused - popular) with its standard error.
The ranked list (user, movie, retrieval score and rank, each task's probability, score, rank) is
written to `--output`; the metrics are printed as a table and as `RESULT` lines, and saved beside
the output as JSON.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tml.common.entry_point import CommandError, call_command, command_parser, run_command
from tml.common.output_dirs import default_output_dir
from tml.projects.home.recap.scripts import prepare_movielens as ml
from tml.projects.home.recap.twhin_features import (SCORE_VALUES, EdgeScorer, TwhinFeature, TwhinScore,
                                                    add_twhin_columns, load_vector_tables)

if TYPE_CHECKING:  # torch-backed modules are imported where used: --help answers at once
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.twhin.config import TwhinConfig

USER_COLUMN, MOVIE_COLUMN = "meta.user_id", "meta.movie_id"
TWHIN_FEATURES = (
    TwhinFeature("twhin.user_embedding", "user", USER_COLUMN),
    TwhinFeature("twhin.movie_embedding", "movie", MOVIE_COLUMN),
)
DEFAULT_WEIGHTS = "liked=1,loved=1,disliked=-2"
LIKED_MIN_STARS = 4


def _read_ratings(pattern: str) -> dict[str, np.ndarray]:
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no Parquet files match {pattern}; run prepare_movielens first")
    table = pa.concat_tables([pq.read_table(p, columns=[USER_COLUMN, MOVIE_COLUMN, "meta.rating"]) for p in paths])
    rated = table.column("meta.rating").to_numpy() > 0  # sampled negatives (rating 0) are not ratings
    return {name: table.column(name).to_numpy()[rated] for name in table.column_names}


def _key_to_row(mapping_dir: str, table: str) -> dict[int, int]:
    path = os.path.join(mapping_dir, f"{table}.parquet")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: --twhin_data must be the folder prepare_movielens (TwHIN) wrote")
    mapping = pq.read_table(path)
    return {int(key): int(row) for key, row in zip(mapping.column("key").to_pylist(), mapping.column("id").to_pylist())}


# ---------------------------------------------------------------------------------- metrics


def user_ndcg_at_10(ranked: Sequence[int], wanted: set[int]) -> float:
    """NDCG@10 of one list: binary gains, ideal DCG over min(10, |wanted|) items."""
    discounts = 1.0 / np.log2(np.arange(2, 12))
    hits = np.array([movie in wanted for movie in ranked[:10]], dtype=np.float64)
    return float((hits * discounts[: len(hits)]).sum() / discounts[: min(10, len(wanted))].sum())


def ranking_metrics(lists: dict[int, list[int]], relevant: dict[int, set[int]]) -> dict[str, float]:
    """Mean over users of recall@10, recall@50 and NDCG@10; and NDCG@10's standard error over users."""
    recall10, recall50, ndcg10 = [], [], []
    for user, wanted in relevant.items():
        ranked = lists.get(user, [])
        hits = np.array([movie in wanted for movie in ranked[:50]], dtype=np.float64)
        recall10.append(hits[:10].sum() / len(wanted))
        recall50.append(hits.sum() / len(wanted))
        ndcg10.append(user_ndcg_at_10(ranked, wanted))
    return {"recall_at_10": float(np.mean(recall10)), "recall_at_50": float(np.mean(recall50)),
            "ndcg_at_10": float(np.mean(ndcg10)), "ndcg_at_10_se": standard_error(ndcg10)}


def standard_error(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def paired_ndcg_difference(first: dict[int, list[int]], second: dict[int, list[int]],
                           relevant: dict[int, set[int]]) -> dict[str, float]:
    """Mean over users of NDCG@10(first) - NDCG@10(second), and its standard error: the users are the
    same, so their differences vary far less than either list's NDCG does."""
    differences = [user_ndcg_at_10(first.get(u, []), m) - user_ndcg_at_10(second.get(u, []), m)
                   for u, m in relevant.items()]
    return {"mean": float(np.mean(differences)), "se": standard_error(differences)}


PAIRS = (("ranked", "popular"), ("ranked", "retrieval"), ("fused", "popular"))


# ---------------------------------------------------------------------------------- the pipeline


def user_halves(users: Sequence[int], seed: int) -> dict[str, set[int]]:
    """A random half of the users to choose settings on (`tune`), the other half to report (`test`)."""
    ordered = np.array(sorted(int(u) for u in users), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(ordered))
    half = len(ordered) // 2
    return {"tune": set(ordered[order[:half]].tolist()), "test": set(ordered[order[half:]].tolist())}


def user_queries(user_vectors: np.ndarray, embeddings: str, twhin_config: Optional["TwhinConfig"],
                 relation: str) -> np.ndarray:
    """The vectors movies are scored against: the users' own, or the relation's query of the model."""
    if twhin_config is None:
        return user_vectors
    from tml.projects.twhin.retrieval import model_queries

    try:
        return model_queries(user_vectors, embeddings, twhin_config, relation, ("user", "movie"))[0]
    except (KeyError, ValueError) as error:
        raise CommandError(f"--relation: {error.args[0]}") from error


def reciprocal_rank_fusion(ranks: Sequence[np.ndarray], c: float) -> np.ndarray:
    """sum_i 1 / (c + rank_i): higher is better; a small c lets the top of each order count more."""
    if c <= 0:
        raise ValueError(f"the fusion constant must be positive, got {c}")
    return np.sum([1.0 / (c + np.asarray(rank, dtype=np.float64)) for rank in ranks], axis=0)


def popular_lists(train: dict[str, np.ndarray], users: Sequence[int], k: int,
                  leave_out: Optional[dict[int, set[int]]] = None) -> dict[int, list[int]]:
    """Each user's k most-rated movies of the training period that the user neither rated nor has
    in `leave_out`."""
    counts = np.bincount(train[MOVIE_COLUMN])
    by_popularity = [int(m) for m in np.argsort(-counts, kind="stable") if counts[m] > 0]
    seen_by_user: dict[int, set[int]] = {}
    for user, movie in zip(train[USER_COLUMN].tolist(), train[MOVIE_COLUMN].tolist()):
        seen_by_user.setdefault(user, set()).add(movie)
    lists = {}
    for user in users:
        skip = seen_by_user.get(user, set()) | (leave_out or {}).get(user, set())
        lists[user] = [m for m in by_popularity[: k + len(skip)] if m not in skip][:k]
    return lists


def retrieve_movies(twhin_data: str, embeddings: str, twhin_config: Optional["TwhinConfig"], relation: str,
                    users: np.ndarray, seen_users: np.ndarray, seen_movies: np.ndarray,
                    k: int) -> tuple[dict[int, tuple[list[int], list[float]]], Optional[str]]:
    """user id -> (its k best movies by TwHIN, their scores), best first, for the `users` that have a
    TwHIN vector, leaving out every (seen_users, seen_movies) pair (data ids); and the faiss index
    kind used (None: exact search)."""
    from tml.projects.twhin import ann_index
    from tml.projects.twhin.retrieval import excluded_lists, retrieve

    user_row = _key_to_row(os.path.join(twhin_data, "mapping"), "user")
    movie_row = _key_to_row(os.path.join(twhin_data, "mapping"), "movie")
    movie_of_row = {row: key for key, row in movie_row.items()}
    vectors = load_vector_tables(embeddings, TWHIN_FEATURES)
    user_vectors, movie_vectors = vectors["user"], vectors["movie"]
    kept = np.array([u for u in np.asarray(users).tolist() if u in user_row], dtype=np.int64)
    queries = user_queries(user_vectors.vectors[np.searchsorted(user_vectors.ids, [user_row[u] for u in kept])],
                           embeddings, twhin_config, relation)
    items = np.zeros((int(movie_vectors.ids.max()) + 1, movie_vectors.dim), dtype=np.float32)
    items[movie_vectors.ids] = movie_vectors.vectors
    seen_user_rows = np.array([user_row.get(int(u), -1) for u in seen_users], dtype=np.int64)
    seen_movie_rows = np.array([movie_row.get(int(m), -1) for m in seen_movies], dtype=np.int64)
    exclude = excluded_lists(np.array([user_row[u] for u in kept], dtype=np.int64), seen_user_rows, seen_movie_rows)
    saved = ann_index.load_index(embeddings, "movie", "dot") if os.path.isdir(embeddings) else None
    found, scores = retrieve(queries, items, k, exclude, "dot", None if saved is None else saved[0])
    lists = {}
    for user, rows, values in zip(kept.tolist(), found, scores):
        good = rows >= 0
        lists[user] = ([movie_of_row[int(r)] for r in rows[good]], values[good].tolist())
    return lists, None if saved is None else saved[1]["kind"]


def retrieve_and_rank(
    data_dir: str,
    twhin_data: str,
    embeddings: str,
    config: "RecapConfig",
    checkpoint: str,
    output: str,
    k: int = 100,
    weights: str = DEFAULT_WEIGHTS,
    validation_fraction: float = 0.2,
    twhin_config: Optional["TwhinConfig"] = None,
    relation: str = "liked",
    popular_k: int = 0,
    split_seed: int = 0,
    fusion_c: float = 0.0,
    twhin_score: bool = False,
) -> dict[str, Any]:
    from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
    from tml.projects.home.recap.data.segdense import load_segdense_schema
    from tml.projects.home.recap.engagement_weights import parse_weights
    from tml.projects.home.recap.score import score_candidates, write_table

    if twhin_score and twhin_config is None:
        raise CommandError("--twhin_score needs --twhin_config (the score is the model's own, as retrieval ranks)")
    if k <= 0 or popular_k < 0 or fusion_c < 0:
        raise CommandError(f"--k must be positive, --popular_k and --fusion_c at least 0; got {k}, {popular_k}, {fusion_c}")
    train = _read_ratings(os.path.join(data_dir, "train", "*.parquet"))
    validation = _read_ratings(os.path.join(data_dir, "validation", "*.parquet"))
    warm = np.intersect1d(np.unique(validation[USER_COLUMN]), np.unique(train[USER_COLUMN]))
    liked = validation["meta.rating"] >= LIKED_MIN_STARS
    relevant: dict[int, set[int]] = {}
    warm_set = set(warm.tolist())
    for user, movie in zip(validation[USER_COLUMN][liked].tolist(), validation[MOVIE_COLUMN][liked].tolist()):
        if user in warm_set:
            relevant.setdefault(int(user), set()).add(int(movie))

    retrieved_scores, index_kind = retrieve_movies(twhin_data, embeddings, twhin_config, relation, warm,
                                                   train[USER_COLUMN], train[MOVIE_COLUMN], k)
    users = np.array(sorted(retrieved_scores), dtype=np.int64)

    # candidates: each user's TwHIN list, then (--popular_k) popular movies it does not hold
    retrieved: dict[int, list[int]] = {}
    cand_users, cand_movies, retrieval_rank, retrieval_score, source = [], [], [], [], []
    for user in users.tolist():
        movies, values = retrieved_scores[user]
        retrieved[user] = movies
        cand_users += [user] * len(movies)
        cand_movies += movies
        retrieval_rank += list(range(1, len(movies) + 1))
        retrieval_score += values
        source += ["twhin"] * len(movies)
    if popular_k:
        extra = popular_lists(train, users.tolist(), popular_k, {u: set(m) for u, m in retrieved.items()})
        for user in users.tolist():
            movies = extra[user]
            cand_users += [user] * len(movies)
            cand_movies += movies
            retrieval_rank += list(range(k + 1, k + 1 + len(movies)))  # after the TwHIN list
            retrieval_score += [float("nan")] * len(movies)
            source += ["popular"] * len(movies)
    cand_users_array = np.array(cand_users, dtype=np.int64)
    cand_movies_array = np.array(cand_movies, dtype=np.int64)

    schema_path = config.train_data.seg_dense_schema.schema_path
    schema = load_segdense_schema(schema_path)
    columns = ml.candidate_columns(ml.movielens_folder(), cand_users_array, cand_movies_array, validation_fraction)
    if twhin_score:  # the ranker was trained with twhin_features --score RELATION=user:movie into the block
        scorer = EdgeScorer(TwhinScore(relation, USER_COLUMN, MOVIE_COLUMN), embeddings, twhin_config,
                            os.path.join(twhin_data, "mapping"))
        values, _ = scorer.values(pa.table({USER_COLUMN: cand_users_array, MOVIE_COLUMN: cand_movies_array}), "candidates")
        columns[ml.CONTINUOUS] = np.concatenate([columns[ml.CONTINUOUS], values], axis=1)
    block = schema.get(ml.CONTINUOUS)
    if block is not None and block.length != columns[ml.CONTINUOUS].shape[1]:
        raise CommandError(
            f"the ranker's schema {schema_path} has {block.length} continuous values, the candidate rows "
            f"{columns[ml.CONTINUOUS].shape[1]}: rank with --twhin_score exactly when the ranker's data had "
            f"twhin_features --score {relation}=... appended ({len(SCORE_VALUES)} values)")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "candidates.parquet")
        base = [feature for name, feature in schema.items() if name in columns]
        with SegDenseParquetWriter(path, base) as writer:
            writer.write({f.name: columns[f.name] for f in base})
        wanted_twhin = [f for f in TWHIN_FEATURES if f.column in schema]
        if wanted_twhin:
            joined, _ = add_twhin_columns(pq.read_table(path), wanted_twhin,
                                          load_vector_tables(embeddings, wanted_twhin, os.path.join(twhin_data, "mapping")))
            pq.write_table(joined, path)
        scored = score_candidates(config, checkpoint, path, parse_weights(weights),
                                  user_id_column=USER_COLUMN, tweet_id_column=MOVIE_COLUMN)
    scored = scored.append_column("retrieval_score", pa.array(retrieval_score, pa.float32())) \
                   .append_column("retrieval_rank", pa.array(retrieval_rank, pa.int64())) \
                   .append_column("source", pa.array(source, pa.string()))
    if fusion_c:
        fused = reciprocal_rank_fusion([scored.column("rank").to_numpy(), scored.column("retrieval_rank").to_numpy()], fusion_c)
        scored = scored.append_column("fused_score", pa.array(fused)).append_column("fused_order", pa.array(-fused))
    write_table(scored.sort_by([(USER_COLUMN, "ascending"), ("rank", "ascending")]), output)

    def lists_by(table: pa.Table, order_column: str) -> dict[int, list[int]]:
        table = table.sort_by([(USER_COLUMN, "ascending"), (order_column, "ascending")])
        out: dict[int, list[int]] = {}
        for user, movie in zip(table.column(USER_COLUMN).to_pylist(), table.column(MOVIE_COLUMN).to_pylist()):
            out.setdefault(int(user), []).append(int(movie))
        return out

    twhin_only = scored.filter(pc.equal(scored.column("source"), "twhin"))
    lists = {
        "popular": popular_lists(train, list(relevant), k),
        "retrieval": lists_by(twhin_only, "retrieval_rank"),
        "ranked": lists_by(scored, "rank"),
    }
    if fusion_c:
        lists["fused"] = lists_by(scored, "fused_order")
    candidates = lists_by(scored, "rank")
    halves = user_halves(relevant, split_seed)
    results: dict[str, Any] = {}
    for group, members in (("all", set(relevant)), ("tune", halves["tune"]), ("test", halves["test"])):
        wanted = {u: m for u, m in relevant.items() if u in members}
        results[group] = {name: ranking_metrics(order, wanted) for name, order in lists.items()}
        results[group]["paired_ndcg_at_10"] = {f"{a}_minus_{b}": paired_ndcg_difference(lists[a], lists[b], wanted)
                                               for a, b in PAIRS if a in lists}
        results[group]["candidates_recall"] = float(np.mean(
            [len(m & set(candidates.get(u, []))) / len(m) for u, m in wanted.items()]))
        results[group]["users"] = len(wanted)
    results["counts"] = {"users": len(relevant), "twhin_candidates_per_user": k, "popular_candidates_per_user": popular_k,
                         "validation_users": int(len(np.unique(validation[USER_COLUMN]))),
                         "index": index_kind, "split_seed": split_seed,
                         "fusion_c": fusion_c, "twhin_score": twhin_score}
    with open(os.path.splitext(output)[0] + ".metrics.json", "w") as stream:
        json.dump(results, stream, indent=2)
    return results


def format_table(results: dict[str, Any]) -> str:
    lines = ["| list | recall@10 | recall@50 | NDCG@10 (+- s.e.) |", "|---|---|---|---|"]
    names = {"popular": "most popular", "retrieval": "TwHIN retrieval", "ranked": "retrieval + Heavy Ranker",
             "fused": "retrieval + Heavy Ranker, rank fusion"}
    for key, name in names.items():
        if key not in results:
            continue
        m = results[key]
        lines.append(f"| {name} | {m['recall_at_10']:.4f} | {m['recall_at_50']:.4f} | {m['ndcg_at_10']:.4f} "
                     f"(+- {m['ndcg_at_10_se']:.4f}) |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__.split("\n\n")[0] + " The config is the Heavy Ranker's the checkpoint was trained with.")
    parser.add_argument("--embeddings", required=True, help="TwHIN export directory (user and movie tables).")
    parser.add_argument("--twhin_data", default=default_output_dir("twhin", "movielens"), help="TwHIN prepare_movielens output (its mapping/).")
    parser.add_argument("--data_dir", default=ml.DEFAULT_OUTPUT_DIR, help="Heavy Ranker prepare_movielens output.")
    parser.add_argument("--checkpoint", required=True, help="Checkpoint or save_dir (newest checkpoint).")
    parser.add_argument("--output", required=True, help="Ranked list, Parquet.")
    parser.add_argument("--k", type=int, default=100, help="Candidates retrieved by TwHIN per user.")
    parser.add_argument("--popular_k", type=int, default=0, help="Most-popular candidates added per user (0: none).")
    parser.add_argument("--twhin_config", help="The TwHIN config of the export: retrieve with --relation's query "
                        "(operator, relation vectors, relation_aware). Without it: the users' own vectors.")
    parser.add_argument("--relation", default="liked", help="user -> movie relation whose ranking retrieves (with --twhin_config).")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="task=weight,... of the ranking score.")
    parser.add_argument("--validation_fraction", type=float, default=0.2, help="As given to prepare_movielens.")
    parser.add_argument("--fusion_c", type=float, default=0.0,
                        help="Also rank by reciprocal-rank fusion of the ranker's and retrieval's orders with this constant (0: off).")
    parser.add_argument("--twhin_score", action="store_true",
                        help="Append the TwHIN model's score of (user, --relation, movie) to the candidates' continuous "
                             "block, as twhin_features --score does (for a ranker trained on such data; needs --twhin_config).")
    parser.add_argument("--split_seed", type=int, default=0, help="Seed of the users' tune / test halves.")
    return parser


def main(args: argparse.Namespace) -> int:
    from tml.core.config import load_config_from_yaml
    from tml.common.entry_point import load_command_config
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.twhin.config import TwhinConfig

    config = load_command_config(RecapConfig, args)
    twhin_config = load_config_from_yaml(TwhinConfig, args.twhin_config) if args.twhin_config else None
    try:
        results = retrieve_and_rank(args.data_dir, args.twhin_data, args.embeddings, config, args.checkpoint,
                                    args.output, args.k, args.weights, args.validation_fraction,
                                    twhin_config, args.relation, args.popular_k, args.split_seed, args.fusion_c,
                                    args.twhin_score)
    except (KeyError, ValueError) as error:
        raise CommandError(error.args[0] if error.args else str(error)) from error
    counts = results["counts"]
    print(f"{counts['users']} users with training ratings and liked movies after the split "
          f"(of {counts['validation_users']} validation users); {counts['twhin_candidates_per_user']} TwHIN "
          f"+ {counts['popular_candidates_per_user']} popular candidates each")
    for group in ("all", "tune", "test"):
        print(f"\n{group} users ({results[group]['users']}); candidates hold "
              f"{results[group]['candidates_recall']:.4f} of their liked movies")
        print(format_table(results[group]))
        print("NDCG@10 differences on the same users (mean +- standard error): " + "; ".join(
            f"{pair.replace('_minus_', ' - ')} {d['mean']:+.4f} +- {d['se']:.4f}"
            for pair, d in results[group]["paired_ndcg_at_10"].items()))
    print()
    for group, prefix in (("test", ""), ("tune", "tune_"), ("all", "all_")):
        for key in ("ranked", "fused", "retrieval", "popular"):
            for metric, value in results[group].get(key, {}).items():
                print(f"RESULT {prefix}{key}_{metric}={value:.4f}")
        for pair, difference in results[group]["paired_ndcg_at_10"].items():
            print(f"RESULT {prefix}{pair}_ndcg_at_10={difference['mean']:.4f}")
            print(f"RESULT {prefix}{pair}_ndcg_at_10_se={difference['se']:.4f}")
    print(f"wrote {args.output}")
    return 0


def run(argv: Optional[Sequence[str]] = None) -> int:
    """In-process call (tests): the exit code."""
    return call_command(build_parser(), main, argv)


if __name__ == "__main__":
    run_command(build_parser(), main)
