"""Retrieve, then rank, on MovieLens-100k: TwHIN retrieval, Heavy Ranker scoring, and their evaluation.

    python -m tml.projects.home.recap.scripts.movielens_retrieve_rank \
        --embeddings TWHIN_EXPORT --twhin_data ~/tmp/tml/twhin/movielens \
        --config_path projects/home/recap/config/movielens.yaml --checkpoint SAVE_DIR \
        --output ranked.parquet [--k 100] [--data_dir ~/tmp/tml/movielens]

For every user with ratings both before and after the time split (the users a recommender can be
judged on at that moment):
1. retrieve: the `--k` movies whose TwHIN vectors have the largest inner product with the user's
   (the `liked` relation's ranking, see `tml.projects.twhin.retrieval`), leaving out every movie
   the user rated in the training period; a faiss index saved beside the export (`embeddings index
   --metric dot`) is used when present;
2. rank: build the Heavy Ranker's input row of every (user, candidate) as of the split
   (`prepare_movielens.candidate_columns`; with the TwHIN columns when the config's schema has
   them), score it with the trained model (per-task calibrated probabilities and the weighted score
   of `--weights`), and order each user's candidates by that score;
3. evaluate against the movies the user liked (4-5 stars) after the split: recall@10, recall@50
   and NDCG@10 of the retrieval order, the ranked order and a most-popular list (the most-rated
   movies of the training period, minus those the user rated).
The ranked list (user, movie, retrieval score and rank, each task's probability, score, rank) is
written to `--output`; the metrics are printed as a table and as `RESULT` lines, and saved beside
the output as JSON.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.common.output_dirs import default_output_dir
from tml.core.config import load_config_from_yaml
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
from tml.projects.home.recap.data.segdense import load_segdense_schema
from tml.projects.home.recap.engagement_weights import parse_weights
from tml.projects.home.recap.score import score_candidates, write_table
from tml.projects.home.recap.scripts import prepare_movielens as ml
from tml.projects.home.recap.twhin_features import TwhinFeature, add_twhin_columns, load_vector_tables
from tml.projects.twhin import ann_index
from tml.projects.twhin.retrieval import excluded_lists, retrieve

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


def ranking_metrics(lists: dict[int, list[int]], relevant: dict[int, set[int]]) -> dict[str, float]:
    """Mean over users of recall@10, recall@50 and NDCG@10 (binary gains, ideal DCG over
    min(10, |relevant|) items)."""
    discounts = 1.0 / np.log2(np.arange(2, 12))
    recall10, recall50, ndcg10 = [], [], []
    for user, wanted in relevant.items():
        ranked = lists.get(user, [])
        hits = np.array([movie in wanted for movie in ranked[:50]], dtype=np.float64)
        recall10.append(hits[:10].sum() / len(wanted))
        recall50.append(hits.sum() / len(wanted))
        dcg = float((hits[:10] * discounts[: len(hits[:10])]).sum())
        ndcg10.append(dcg / float(discounts[: min(10, len(wanted))].sum()))
    return {"recall_at_10": float(np.mean(recall10)), "recall_at_50": float(np.mean(recall50)),
            "ndcg_at_10": float(np.mean(ndcg10))}


# ---------------------------------------------------------------------------------- the pipeline


def retrieve_and_rank(
    data_dir: str,
    twhin_data: str,
    embeddings: str,
    config: RecapConfig,
    checkpoint: str,
    output: str,
    k: int = 100,
    weights: str = DEFAULT_WEIGHTS,
    validation_fraction: float = 0.2,
) -> dict[str, dict[str, float]]:
    train = _read_ratings(os.path.join(data_dir, "train", "*.parquet"))
    validation = _read_ratings(os.path.join(data_dir, "validation", "*.parquet"))
    warm = np.intersect1d(np.unique(validation[USER_COLUMN]), np.unique(train[USER_COLUMN]))
    liked = validation["meta.rating"] >= LIKED_MIN_STARS
    relevant: dict[int, set[int]] = {}
    warm_set = set(warm.tolist())
    for user, movie in zip(validation[USER_COLUMN][liked].tolist(), validation[MOVIE_COLUMN][liked].tolist()):
        if user in warm_set:
            relevant.setdefault(int(user), set()).add(int(movie))

    user_row = _key_to_row(os.path.join(twhin_data, "mapping"), "user")
    movie_row = _key_to_row(os.path.join(twhin_data, "mapping"), "movie")
    movie_of_row = {row: key for key, row in movie_row.items()}
    vectors = load_vector_tables(embeddings, TWHIN_FEATURES)
    user_vectors, movie_vectors = vectors["user"], vectors["movie"]
    users = np.array([u for u in warm.tolist() if u in user_row], dtype=np.int64)
    queries = user_vectors.vectors[np.searchsorted(user_vectors.ids, [user_row[u] for u in users])]
    items = np.zeros((int(movie_vectors.ids.max()) + 1, movie_vectors.dim), dtype=np.float32)
    items[movie_vectors.ids] = movie_vectors.vectors
    seen_users = np.array([user_row.get(int(u), -1) for u in train[USER_COLUMN]], dtype=np.int64)
    seen_movies = np.array([movie_row.get(int(m), -1) for m in train[MOVIE_COLUMN]], dtype=np.int64)
    exclude = excluded_lists(np.array([user_row[u] for u in users]), seen_users, seen_movies)
    saved = ann_index.load_index(embeddings, "movie", "dot") if os.path.isdir(embeddings) else None
    found, scores = retrieve(queries, items, k, exclude, "dot", None if saved is None else saved[0])

    cand_users = np.repeat(users, k)
    cand_rows = found.reshape(-1)
    keep = cand_rows >= 0
    cand_users, cand_movies = cand_users[keep], np.array([movie_of_row[int(r)] for r in cand_rows[keep]], dtype=np.int64)
    retrieval_rank = np.tile(np.arange(1, k + 1), len(users))[keep]
    retrieval_score = scores.reshape(-1)[keep]

    schema_path = config.train_data.seg_dense_schema.schema_path
    schema = load_segdense_schema(schema_path)
    columns = ml.candidate_columns(ml.movielens_folder(), cand_users, cand_movies, validation_fraction)
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
    ranked = scored.append_column("retrieval_score", pa.array(retrieval_score)) \
                   .append_column("retrieval_rank", pa.array(retrieval_rank))
    ranked = ranked.sort_by([(USER_COLUMN, "ascending"), ("rank", "ascending")])
    write_table(ranked, output)

    def lists_by(order_column: str) -> dict[int, list[int]]:
        table = scored.append_column("retrieval_rank", pa.array(retrieval_rank)).sort_by(
            [(USER_COLUMN, "ascending"), (order_column, "ascending")])
        out: dict[int, list[int]] = {}
        for user, movie in zip(table.column(USER_COLUMN).to_pylist(), table.column(MOVIE_COLUMN).to_pylist()):
            out.setdefault(int(user), []).append(int(movie))
        return out

    counts = np.bincount(train[MOVIE_COLUMN])
    by_popularity = np.argsort(-counts, kind="stable")
    seen_by_user: dict[int, set[int]] = {}
    for user, movie in zip(train[USER_COLUMN].tolist(), train[MOVIE_COLUMN].tolist()):
        seen_by_user.setdefault(user, set()).add(movie)
    popular = {}
    for user in relevant:
        seen = seen_by_user.get(user, set())
        popular[user] = [int(m) for m in by_popularity[: k + len(seen)] if m not in seen and counts[m] > 0][:k]
    results = {
        "popular": ranking_metrics(popular, relevant),
        "retrieval": ranking_metrics(lists_by("retrieval_rank"), relevant),
        "ranked": ranking_metrics(lists_by("rank"), relevant),
    }
    results["counts"] = {"users": len(relevant), "candidates_per_user": k,
                         "validation_users": int(len(np.unique(validation[USER_COLUMN]))),
                         "index": None if saved is None else saved[1]["kind"]}  # type: ignore[assignment]
    with open(os.path.splitext(output)[0] + ".metrics.json", "w") as stream:
        json.dump(results, stream, indent=2)
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| list | recall@10 | recall@50 | NDCG@10 |", "|---|---|---|---|"]
    names = {"popular": "most popular", "retrieval": "TwHIN retrieval", "ranked": "retrieval + Heavy Ranker"}
    for key, name in names.items():
        m = results[key]
        lines.append(f"| {name} | {m['recall_at_10']:.4f} | {m['recall_at_50']:.4f} | {m['ndcg_at_10']:.4f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", required=True, help="TwHIN export directory (user and movie tables).")
    parser.add_argument("--twhin_data", default=default_output_dir("twhin", "movielens"), help="TwHIN prepare_movielens output (its mapping/).")
    parser.add_argument("--data_dir", default=ml.DEFAULT_OUTPUT_DIR, help="Heavy Ranker prepare_movielens output.")
    parser.add_argument("--config_path", required=True, help="The Heavy Ranker config the checkpoint was trained with.")
    parser.add_argument("--checkpoint", required=True, help="Checkpoint or save_dir (newest checkpoint).")
    parser.add_argument("--output", required=True, help="Ranked list, Parquet.")
    parser.add_argument("--k", type=int, default=100, help="Candidates retrieved per user.")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="task=weight,... of the ranking score.")
    parser.add_argument("--validation_fraction", type=float, default=0.2, help="As given to prepare_movielens.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Config override key=value.")
    args = parser.parse_args(argv)
    try:
        config = load_config_from_yaml(RecapConfig, args.config_path, overrides=args.overrides) if args.overrides \
            else load_config_from_yaml(RecapConfig, args.config_path)
        results = retrieve_and_rank(args.data_dir, args.twhin_data, args.embeddings, config, args.checkpoint,
                                    args.output, args.k, args.weights, args.validation_fraction)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    counts = results["counts"]
    print(f"{counts['users']} users with training ratings and liked movies after the split "
          f"(of {counts['validation_users']} validation users); {counts['candidates_per_user']} candidates each")
    print(format_table(results))
    for key in ("ranked", "retrieval", "popular"):
        for metric, value in results[key].items():
            print(f"RESULT {key}_{metric}={value:.4f}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
