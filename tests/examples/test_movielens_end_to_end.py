"""The end-to-end example in its small mode: every stage runs and the RESULT lines come out."""
import json
import os
import re
import subprocess
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from installed import installed

REPO = Path(__file__).resolve().parents[2]
RESULTS = ("ranked_ndcg_at_10", "fused_ndcg_at_10", "retrieval_ndcg_at_10", "popular_ndcg_at_10", "retrieval_recall_at_50",
           "twhin_features_auroc_gain", "ranked_minus_popular_ndcg_at_10", "ranked_minus_popular_ndcg_at_10_se",
           "seed_mean_ranked_ndcg_at_10")


@pytest.mark.slow
@pytest.mark.timeout(900)  # 85 s on a lightly loaded 2-core box; 508 s measured with the machine shared by 4 jobs
@pytest.mark.skipif(not (installed("recbole") and installed("faiss-cpu")), reason="needs recbole data and faiss-cpu")
def test_small_end_to_end_prints_the_table_and_results(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "examples/movielens_end_to_end.sh"), "--small", "--work_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=880, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "| retrieval + Heavy Ranker |" in out and "| most popular |" in out
    for name in RESULTS:
        match = re.search(rf"^RESULT {name}=(-?[0-9.]+)$", out, re.MULTILINE)
        assert match, f"no RESULT {name}= line in:\n{out[-2000:]}"
        value = float(match.group(1))
        assert -1.0 <= value <= 1.0
    ranked = pq.read_table(tmp_path / "ranked_0.parquet")
    assert {"meta.user_id", "meta.movie_id", "liked", "score", "rank", "retrieval_rank"} <= set(ranked.column_names)
    train = pq.read_table(str(tmp_path / "recap/train"), columns=["meta.user_id", "meta.movie_id", "meta.rating"])
    rated = train.filter(pc.greater(train.column("meta.rating"), 0))
    seen = set(zip(rated.column("meta.user_id").to_pylist(), rated.column("meta.movie_id").to_pylist()))
    listed = list(zip(ranked.column("meta.user_id").to_pylist(), ranked.column("meta.movie_id").to_pylist()))
    assert listed and not seen & set(listed)  # no user is offered a movie rated in training
    scored = json.loads((tmp_path / "recap_label_period/score/train/twhin_features.json").read_text())
    assert scored["scores"]["values"] == ["liked.score", "liked.score_in_user", "liked.has_score"]
    assert json.loads((tmp_path / "ranked_0.metrics.json").read_text())["counts"]["twhin_score"] is True


def test_a_bad_cut_is_refused_before_anything_runs(tmp_path):
    done = subprocess.run(["bash", str(REPO / "examples/movielens_end_to_end.sh"), "--cut", "0.99", "--work_dir",
                           str(tmp_path / "w")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--cut must be a fraction" in done.stderr
    assert not (tmp_path / "w").exists()
