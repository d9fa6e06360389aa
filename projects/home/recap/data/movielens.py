"""MovieLens-100k as Heavy Ranker data: three engagement tasks per rating, split by time.

The library of the command `python -m tml.projects.home.recap.scripts.prepare_movielens`, whose
module serves these names too. The ratings are read from the installed `recbole` wheel
(`.venv/bin/pip install --no-deps recbole==1.2.1`), at recbole/dataset_example/ml-100k/
(ml-100k.inter, .user, .item). The package is never imported and its data never copied into the
repository (MovieLens forbids redistribution).

Each rating (user, movie, stars, time) becomes one row of config/movielens_segdense.json:
    liked = stars >= 4, loved = stars == 5, disliked = stars <= 2        (the labels)
    meta.user_id, meta.movie_id                                          (large-embedding ids)
    meta.timestamp, meta.rating                                          (kept for inspection)
    continuous [8]: age, release year, years between release and rating, the user's number and mean
        of earlier ratings, the movie's number and mean of earlier ratings, number of genres
    binary [43]: gender (F, M), occupation (21, one-hot), genres (19, multi-hot), release year unknown
    discrete [3]: gender index, occupation index, age bucket (<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+)
"Earlier" means before the rating in time order (ties by user, then movie id), so every feature is
known when the rating is made, like the Heavy Ranker's aggregate features; a mean with no history
is the training split's mean stars.

Split by time: the earliest (1 - validation_fraction) of the ratings train, the latest validate.
`label_start_fraction` F keeps only the training rows of ratings after the earliest F of all
ratings (the label period; earlier ratings still count in the history features): a TwHIN graph of
those earliest ratings (TwHIN's `prepare_movielens --split time --validation_fraction 1-F`) then
cannot encode any training label.
Training rows are written in a random order (the reader shuffles only within a buffer), into
num_train_files files under DIR/train/; validation rows into DIR/validation/.
"""
from __future__ import annotations

import csv
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

import tml
from tml.projects.home.recap.data.segdense import load_segdense_schema
from tml.projects.home.recap.data.splits import check_widths, write_split

DISTRIBUTION = "recbole"
VERSION = "1.2.1"
DATA_FOLDER = "recbole/dataset_example/ml-100k"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(tml.__file__)), "projects/home/recap/config/movielens_segdense.json")

CONTINUOUS = "movielens_cont__segdense_vals"
BINARY = "movielens_binary__segdense_vals"
DISCRETE = "movielens_discrete__segdense_vals"
AGE_BUCKET_EDGES = (18, 25, 35, 45, 50, 56)
GENDERS = ("F", "M")


def movielens_folder() -> Path:
    """ml-100k inside the installed recbole distribution (read as files, never imported)."""
    install = f".venv/bin/pip install --no-deps {DISTRIBUTION}=={VERSION}"
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"MovieLens-100k is read from the '{DISTRIBUTION}' package, which is not installed: {install}") from None
    folder = Path(str(distribution.locate_file(DATA_FOLDER)))
    if not (folder / "ml-100k.inter").is_file():
        raise FileNotFoundError(
            f"{folder}/ml-100k.inter is missing from {DISTRIBUTION} {distribution.version}; this script reads {install}"
        )
    return folder


def read_atomic_file(path: Path) -> dict[str, list[str]]:
    """RecBole's TSV files: a header of `name:type` fields; columns by name, values as text."""
    with open(path, encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [field.split(":", 1)[0] for field in next(reader)]
        columns: dict[str, list[str]] = {name: [] for name in header}
        for line_number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{line_number} has {len(row)} fields; the header names {len(header)}")
            for name, value in zip(header, row):
                columns[name].append(value)
    return columns


def _lookup(ids: np.ndarray, keys: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """values[position of id among keys] for each id."""
    order = np.argsort(keys)
    positions = np.searchsorted(keys, ids, sorter=order)
    positions = np.minimum(positions, len(keys) - 1)
    found = keys[order[positions]] == ids
    if not found.all():
        raise ValueError(f"ratings name {what} ids absent from the {what} file, e.g. {ids[~found][:5].tolist()}")
    return values[order[positions]]


def earlier_stats(groups: np.ndarray, values: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """For rows in time order: how many earlier rows share the row's group, and their mean value."""
    order = np.argsort(groups, kind="stable")  # stable keeps time order inside each group
    sorted_groups, sorted_values = groups[order], values[order].astype(np.float64)
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    start_index = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    totals = np.cumsum(sorted_values)
    before_group = np.where(start_index > 0, totals[start_index - 1], 0.0)
    count = np.arange(len(order)) - start_index
    earlier_sum = totals - sorted_values - before_group
    mean = np.where(count > 0, earlier_sum / np.maximum(count, 1), fill)
    counts, means = np.empty(len(order)), np.empty(len(order))
    counts[order], means[order] = count, mean
    return counts, means


def _one_hot(indices: np.ndarray, size: int) -> np.ndarray:
    encoded = np.zeros((len(indices), size), dtype=np.int64)
    encoded[np.arange(len(indices)), indices] = 1
    return encoded


def _feature_blocks(users_file: dict[str, list[str]], items: dict[str, list[str]], user: np.ndarray,
                    movie: np.ndarray, year: np.ndarray | int, user_stats: tuple[np.ndarray, np.ndarray],
                    movie_stats: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """The continuous, binary and discrete blocks of (user, movie) rows seen in `year`, given the
    user's and the movie's (count, mean rating) so far: one definition, so that training rows and
    scoring candidates cannot drift apart."""
    user_keys = np.array(users_file["user_id"], dtype=np.int64)
    age = _lookup(user, user_keys, np.array(users_file["age"], dtype=np.int64), "user")
    gender = _lookup(user, user_keys, np.array([GENDERS.index(g) for g in users_file["gender"]]), "user")
    occupations = sorted(set(users_file["occupation"]))
    occupation = _lookup(user, user_keys, np.array([occupations.index(o) for o in users_file["occupation"]]), "user")

    item_keys, years, item_genres = _movie_arrays(items)
    item_rows = _lookup(movie, item_keys, np.arange(len(item_keys)), "movie")
    release_year = years[item_rows]
    known_year = release_year > 0

    user_count, user_mean = user_stats
    movie_count, movie_mean = movie_stats
    movie_genres = item_genres[item_rows]
    continuous = np.stack(
        [
            age,
            release_year,
            np.where(known_year, np.maximum(year - release_year, 0), 0),
            user_count,
            user_mean,
            movie_count,
            movie_mean,
            movie_genres.sum(axis=1),
        ],
        axis=1,
    ).astype(np.float32)
    binary = np.concatenate(
        [_one_hot(gender, len(GENDERS)), _one_hot(occupation, len(occupations)), movie_genres, (~known_year)[:, None]],
        axis=1,
    ).astype(np.int64)
    discrete = np.stack([gender, occupation, np.searchsorted(AGE_BUCKET_EDGES, age, side="right")], axis=1)
    return {CONTINUOUS: continuous, BINARY: binary, DISCRETE: discrete.astype(np.int64)}


def ratings_in_time_order(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user ids, movie ids, stars, timestamps) of every rating, in time order (ties by user, then
    movie): the order every split of the ratings cuts."""
    ratings = read_atomic_file(folder / "ml-100k.inter")
    user = np.array(ratings["user_id"], dtype=np.int64)
    movie = np.array(ratings["item_id"], dtype=np.int64)
    stars = np.array(ratings["rating"], dtype=np.float64).astype(np.int64)
    timestamp = np.array(ratings["timestamp"], dtype=np.float64).astype(np.int64)
    order = np.lexsort((movie, user, timestamp))
    return user[order], movie[order], stars[order], timestamp[order]


def labels_of(stars: np.ndarray) -> dict[str, np.ndarray]:
    """The three labels of a rating's stars (0: not rated, every label 0)."""
    return {
        "liked": (stars >= 4).astype(np.int64),
        "loved": (stars == 5).astype(np.int64),
        "disliked": ((stars > 0) & (stars <= 2)).astype(np.int64),
    }


def build_rows(folder: Path, validation_fraction: float) -> tuple[dict[str, np.ndarray], int]:
    """All ratings in time order as columns keyed by segdense name; and the number of training rows."""
    users = read_atomic_file(folder / "ml-100k.user")
    items = read_atomic_file(folder / "ml-100k.item")
    user, movie, stars, timestamp = ratings_in_time_order(folder)
    num_train = int(round(len(stars) * (1.0 - validation_fraction)))
    if not 0 < num_train < len(stars):
        raise ValueError(f"validation_fraction {validation_fraction} leaves no training or no validation rows")
    fill = float(stars[:num_train].mean())

    rating_year = timestamp.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    columns = {
        **_feature_blocks(users, items, user, movie, rating_year, earlier_stats(user, stars, fill),
                          earlier_stats(movie, stars, fill)),
        **labels_of(stars),
        "meta.user_id": user,
        "meta.movie_id": movie,
        "meta.timestamp": timestamp,
        "meta.rating": stars,
    }
    return columns, num_train


def earliest_ratings(folder: Path, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, movie ids) of the earliest `fraction` of all ratings, in the order and with the
    rounding of build_rows' split (3 stars included)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the fraction of ratings must be in (0, 1), got {fraction}")
    user, movie, _, _ = ratings_in_time_order(folder)
    earliest = int(round(len(user) * fraction))
    return user[:earliest], movie[:earliest]


def _history_at(groups: np.ndarray, values: np.ndarray, query_groups: np.ndarray, query_positions: np.ndarray,
                fill: float) -> tuple[np.ndarray, np.ndarray]:
    """For rows in time order (position = index): per query (group, position), how many rows of that
    group come before the position, and the mean of their values (`fill` when none)."""
    size = len(groups) + 1
    order = np.lexsort((np.arange(len(groups)), groups))
    keys = groups[order].astype(np.int64) * size + order
    sums = np.concatenate([[0.0], np.cumsum(values[order].astype(np.float64))])
    start = np.searchsorted(keys, query_groups.astype(np.int64) * size)
    end = np.searchsorted(keys, query_groups.astype(np.int64) * size + query_positions)
    count = (end - start).astype(np.float64)
    return count, np.where(count > 0, (sums[end] - sums[start]) / np.maximum(count, 1), fill)


def _movie_table(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(movie ids, release years (0 unknown), [movies, genres] multi-hot) of ml-100k.item."""
    return _movie_arrays(read_atomic_file(folder / "ml-100k.item"))


def _movie_arrays(items: dict[str, list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = np.array(items["item_id"], dtype=np.int64)
    years = np.array([int(y) if y.isdigit() else 0 for y in items["release_year"]], dtype=np.int64)
    genre_lists = [text.split() for text in items["class"]]
    genres = sorted({genre for names in genre_lists for genre in names})
    multi_hot = np.zeros((len(keys), len(genres)), dtype=np.int64)
    for row, names in enumerate(genre_lists):
        multi_hot[row, [genres.index(name) for name in names]] = 1
    return keys, years, multi_hot


def negative_rows(folder: Path, columns: dict[str, np.ndarray], num_train: int, per_rating: int, seed: int = 0,
                  sampling: str = "uniform") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sampled non-engagements, as the Heavy Ranker's training data has them (candidates shown and not
    engaged with): for each rating (rows of `columns`, in time order), `per_rating` movies drawn
    among those the user never rates, shown at the rating's time; all labels 0,
    meta.rating 0. The user's features are the rating's; the movie's are computed for it at that
    time. `sampling` "uniform" draws every movie alike (the model learns what gets watched at all);
    "popularity" draws in proportion to the movie's training-period ratings + 1 (like candidates a
    retrieval stage returns: the model must learn which popular movie, not only popular or not);
    "mixed" draws half of each. Returns the columns and, per negative, the position of its rating."""
    user, movie = columns["meta.user_id"], columns["meta.movie_id"]
    item_keys, _, _ = _movie_table(folder)
    rng = np.random.default_rng(seed)
    source = np.repeat(np.arange(len(user)), per_rating)
    stride = int(item_keys.max()) + 1
    rated = np.unique(user * stride + movie)
    if sampling not in ("uniform", "popularity", "mixed"):
        raise ValueError(f"negative sampling must be uniform, popularity or mixed, got '{sampling}'")
    counts = np.bincount(_lookup(movie[:num_train], item_keys, np.arange(len(item_keys)), "movie"), minlength=len(item_keys))
    popularity = (counts + 1.0) / (counts + 1.0).sum()

    def draw(n: int) -> np.ndarray:
        rows = rng.integers(0, len(item_keys), n)
        popular = rng.random(n) < {"uniform": 0.0, "popularity": 1.0, "mixed": 0.5}[sampling]
        rows[popular] = rng.choice(len(item_keys), size=int(popular.sum()), p=popularity)
        return item_keys[rows]

    picked = draw(len(source))
    for _ in range(100):  # redraw the (few) movies the user rates
        clash = np.isin(user[source] * stride + picked, rated)
        if not clash.any():
            break
        picked[clash] = draw(int(clash.sum()))
    source, picked = source[~clash], picked[~clash]
    return _shown_rows(folder, columns, num_train, source, picked), source


def served_candidate_rows(folder: Path, columns: dict[str, np.ndarray], label_start: int, num_train: int,
                          candidates: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Retrieval's candidates served at the start of the label period, labelled by what followed: one
    row per (user, candidate movie) of each user who rates anything in the label period (ratings
    label_start..num_train of `columns`, in time order), with the features as of that moment
    (`candidate_columns`) and the labels of the user's rating of the movie in the label period (0
    when the user does not rate it then). The same construction as the evaluation's (candidates at
    the split, judged by the ratings after it), one period earlier: the ranker learns to order the
    candidate set it will be given, watched against retrieved-but-not-watched."""
    user, movie, stars = columns["meta.user_id"], columns["meta.movie_id"], columns["meta.rating"]
    period = slice(label_start, num_train)
    active = set(np.unique(user[period]).tolist())
    pairs = [(u, m) for u, movies in sorted(candidates.items()) if u in active for m in np.unique(movies).tolist()]
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    movies = np.array([m for _, m in pairs], dtype=np.int64)
    total = len(user)
    rows = candidate_columns(folder, users, movies, validation_fraction=1.0 - label_start / total)
    stride = int(max(movie.max(), movies.max() if len(movies) else 0)) + 1
    later = dict(zip((user[period] * stride + movie[period]).tolist(), stars[period].tolist()))
    rated = np.array([later.get(key, 0) for key in (users * stride + movies).tolist()], dtype=np.int64)
    rows["meta.rating"] = rated
    rows.update(labels_of(rated))
    return rows


def read_candidates(path: str) -> dict[int, np.ndarray]:
    """user id -> movie ids of a Parquet file of (meta.user_id, meta.movie_id) pairs (e.g. the
    `movielens_candidates` command's output)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise FileNotFoundError(f"candidate file {path} does not exist (write it with movielens_candidates)")
    table = pq.read_table(path)
    missing = [c for c in ("meta.user_id", "meta.movie_id") if c not in table.column_names]
    if missing:
        raise ValueError(f"candidate file {path} has no column(s) {missing}; columns: {table.column_names}")
    users, movies = (table.column(c) for c in ("meta.user_id", "meta.movie_id"))
    if not (pa.types.is_integer(users.type) and pa.types.is_integer(movies.type)) or users.null_count or movies.null_count:
        raise ValueError(f"candidate file {path}: meta.user_id and meta.movie_id must be integers without nulls; "
                         f"found {users.type}, {movies.type}")
    users_np, movies_np = users.to_numpy().astype(np.int64), movies.to_numpy().astype(np.int64)
    order = np.argsort(users_np, kind="stable")
    keys, starts = np.unique(users_np[order], return_index=True)
    return {int(k): chunk for k, chunk in zip(keys, np.split(movies_np[order], starts[1:]))}


def _shown_rows(folder: Path, columns: dict[str, np.ndarray], num_train: int, source: np.ndarray,
                picked: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of movies `picked` shown, unrated, at the times of ratings `source`: the rating's user
    features, the movie's own features and history at that moment, all labels 0."""
    item_keys, years, item_genres = _movie_table(folder)
    stars = columns["meta.rating"].astype(np.float64)
    movie = columns["meta.movie_id"]
    item_rows = _lookup(picked, item_keys, np.arange(len(item_keys)), "movie")
    release_year = years[item_rows]
    known_year = release_year > 0
    rating_year = columns["meta.timestamp"][source].astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    fill = float(stars[:num_train].mean())  # as build_rows: a mean without history is the training mean
    movie_count, movie_mean = _history_at(movie, stars, picked, source, fill)
    genres = item_genres[item_rows]
    continuous = columns[CONTINUOUS][source].copy()
    continuous[:, 1] = release_year
    continuous[:, 2] = np.where(known_year, np.maximum(rating_year - release_year, 0), 0)
    continuous[:, 5], continuous[:, 6], continuous[:, 7] = movie_count, movie_mean, genres.sum(axis=1)
    binary = columns[BINARY][source].copy()
    user_width = binary.shape[1] - genres.shape[1] - 1  # gender and occupation come first
    binary[:, user_width:-1], binary[:, -1] = genres, ~known_year
    zeros = np.zeros(len(source), dtype=np.int64)
    return {
        CONTINUOUS: continuous, BINARY: binary, DISCRETE: columns[DISCRETE][source],
        "liked": zeros, "loved": zeros, "disliked": zeros,
        "meta.user_id": columns["meta.user_id"][source], "meta.movie_id": picked,
        "meta.timestamp": columns["meta.timestamp"][source], "meta.rating": zeros,
    }


def candidate_columns(folder: Path, users: np.ndarray, movies: np.ndarray,
                      validation_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """Rows of the same layout for (user, movie) pairs nobody rated, as if shown at the time of the
    split: the users' and movies' history features count every training rating (the state when the
    validation period starts); labels are 0 (candidates have none)."""
    users_file = read_atomic_file(folder / "ml-100k.user")
    items = read_atomic_file(folder / "ml-100k.item")
    user, movie, stars, timestamp = ratings_in_time_order(folder)
    stars = stars.astype(np.float64)
    num_train = int(round(len(user) * (1.0 - validation_fraction)))
    train = slice(0, num_train)
    fill = float(stars[train].mean())
    split_time = int(timestamp[num_train])
    split_year = int(np.datetime64(split_time, "s").astype("datetime64[Y]").astype(np.int64)) + 1970

    def history(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.bincount(keys[train], minlength=int(max(keys.max(), ids.max())) + 1).astype(np.float64)
        sums = np.bincount(keys[train], weights=stars[train], minlength=len(counts))
        count = counts[ids]
        return count, np.where(count > 0, sums[ids] / np.maximum(count, 1), fill)

    users, movies = np.asarray(users, dtype=np.int64), np.asarray(movies, dtype=np.int64)
    zeros = np.zeros(len(users), dtype=np.int64)
    return {
        **_feature_blocks(users_file, items, users, movies, split_year, history(user, users),
                          history(movie, movies)),
        "liked": zeros, "loved": zeros, "disliked": zeros,
        "meta.user_id": users,
        "meta.movie_id": movies,
        "meta.timestamp": np.full(len(users), split_time, dtype=np.int64),
        "meta.rating": zeros,
    }


def prepare_movielens(output_dir: str, validation_fraction: float = 0.2, num_train_files: int = 4,
                      seed: int = 0, negatives_per_rating: int = 0, negative_sampling: str = "uniform",
                      label_start_fraction: float = 0.0, served_candidates: Optional[str] = None) -> dict[str, object]:
    """Write the train and validation splits; returns their statistics (also saved as stats.json).
    `served_candidates` (a Parquet file of (meta.user_id, meta.movie_id) candidates retrieved at the
    label period's start, e.g. `movielens_candidates --cut_fraction` = label_start_fraction) adds
    them as training rows labelled by the label period's ratings (see served_candidate_rows)."""
    if negatives_per_rating < 0:
        raise ValueError(f"negatives_per_rating must be >= 0, got {negatives_per_rating}")
    if not 0.0 <= label_start_fraction < 1.0 - validation_fraction:
        raise ValueError(f"label_start_fraction must be in [0, 1 - validation_fraction = {1.0 - validation_fraction:g}), "
                         f"got {label_start_fraction}")
    if served_candidates and label_start_fraction <= 0:
        raise ValueError("served_candidates are served at the start of the label period: give label_start_fraction > 0 "
                         "(the --cut_fraction the candidates were retrieved at)")
    candidates = read_candidates(served_candidates) if served_candidates else None
    schema = load_segdense_schema(SCHEMA_PATH)
    folder = movielens_folder()
    columns, num_train = build_rows(folder, validation_fraction)
    check_widths(columns, schema, f" ({SCHEMA_PATH}); the MovieLens files differ from what this script was "
                                  f"written for ({DISTRIBUTION}=={VERSION})")
    total = len(columns["liked"])
    label_start = int(round(total * label_start_fraction))  # TwHIN's time split rounds the same way
    train_rows = np.random.default_rng(seed).permutation(np.arange(label_start, num_train))
    validation_rows = np.arange(num_train, total)
    ratings_only = columns
    if negatives_per_rating:
        negatives, source = negative_rows(folder, columns, num_train, negatives_per_rating, seed, negative_sampling)
        columns = {name: np.concatenate([columns[name], negatives[name]]) for name in columns}
        negative_index = total + np.arange(len(source))
        in_labels = (source >= label_start) & (source < num_train)
        train_rows = np.random.default_rng(seed).permutation(
            np.concatenate([np.arange(label_start, num_train), negative_index[in_labels]]))
        validation_rows = np.concatenate([validation_rows, negative_index[source >= num_train]])
    served = 0
    if candidates is not None:
        extra = served_candidate_rows(folder, ratings_only, label_start, num_train, candidates)
        served = len(extra["liked"])
        first = len(columns["liked"])
        columns = {name: np.concatenate([columns[name], extra[name]]) for name in columns}
        train_rows = np.random.default_rng(seed + 1).permutation(np.concatenate([train_rows, first + np.arange(served)]))
    write_split(os.path.join(output_dir, "train"), columns, train_rows, num_train_files, schema)
    write_split(os.path.join(output_dir, "validation"), columns, validation_rows, 1, schema)
    users = ratings_only["meta.user_id"]
    stats: dict[str, object] = {
        "source": f"{DISTRIBUTION}=={VERSION}:{DATA_FOLDER}",
        "train_rows": int(len(train_rows)),
        "validation_rows": int(len(validation_rows)),
        "negatives_per_rating": negatives_per_rating,
        "negative_sampling": negative_sampling,
        "served_candidates": served_candidates,
        "served_candidate_rows": served,
        "served_candidate_label_rates": {
            task: float(extra[task].mean()) if served else 0.0 for task in ("liked", "loved", "disliked")},
        "split_timestamp": int(ratings_only["meta.timestamp"][num_train]),
        "label_start_fraction": label_start_fraction,
        "label_start_timestamp": int(ratings_only["meta.timestamp"][label_start]),
        "validation_users": int(len(np.unique(users[num_train:]))),
        "validation_users_seen_in_train": int(len(np.intersect1d(users[num_train:], users[:num_train]))),
        "label_rates": {
            split: {task: float(columns[task][rows].mean()) for task in ("liked", "loved", "disliked")}
            for split, rows in (("train", train_rows), ("validation", validation_rows))
        },
    }
    with open(os.path.join(output_dir, "stats.json"), "w") as stream:
        json.dump(stats, stream, indent=2)
    return stats
