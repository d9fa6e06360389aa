#!/usr/bin/env bash
# The whole recommender on MovieLens-100k, from a fresh clone after ./setup.sh:
#   TwHIN graph embeddings -> nearest-neighbour retrieval -> Heavy Ranker features and ranking.
#
#   bash examples/movielens_end_to_end.sh [--small] [--work_dir DIR]
#
# 1. prepare the data, split by time at the same moment for both models (the latest 20% of the
#    ratings are the future): the Heavy Ranker's rows (ratings, plus 4 sampled unrated movies per
#    rating as non-engagements) and TwHIN's graph (liked / disliked edges of the training period,
#    plus the Freebase knowledge graph);
# 2. train TwHIN and export its tables; build a faiss index of the movie table;
# 3. join the TwHIN user and movie vectors into the Heavy Ranker's rows;
# 4. train the Heavy Ranker without and with the TwHIN features (same seed) and compare per-task
#    validation AUROC;
# 5. for each user, retrieve 100 unseen movies by TwHIN similarity, rank them with the Heavy Ranker
#    (with TwHIN features), and compare with a most-popular list on what the users liked later.
# Ends with the table and RESULT lines. --small runs a few steps of everything (a smoke test: its
# numbers mean nothing). Takes a few minutes on 2 CPU cores (--small: about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SMALL=0
WORK="${TML_OUTPUT:-$HOME/tmp/tml}/movielens_end_to_end"
while [ $# -gt 0 ]; do
  case "$1" in
    --small) SMALL=1 ;;
    --work_dir) WORK="$2"; shift ;;
    *) echo "unknown argument: $1 (expected --small or --work_dir DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ ! -x "$PY" ]; then
  echo "no $PY: run ./setup.sh first" >&2
  exit 2
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # small models: a second math thread only contends
export TML_BASE="${TML_BASE:-$PWD}"

if [ "$SMALL" = 1 ]; then
  TWHIN_STEPS=20; RANKER_STEPS=40; K=20
else
  TWHIN_STEPS=500; RANKER_STEPS=1500; K=100
fi
RECAP_DATA="$WORK/recap"
GRAPH="$WORK/twhin"
EXPORT="$GRAPH/export"
TWHIN_CONFIG=projects/twhin/config/movielens.yaml
step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

step "1/6 prepare MovieLens-100k for both models (time split)"
mkdir -p "$WORK"
$PY -m tml.projects.home.recap.scripts.prepare_movielens --output_dir "$RECAP_DATA" --negatives_per_rating 4 > "$WORK/prepare_recap.log"
tail -n 1 "$WORK/prepare_recap.log"
$PY -m tml.projects.twhin.scripts.prepare_movielens --split time --out_dir "$GRAPH"

step "2/6 train TwHIN ($TWHIN_STEPS steps) and export its tables"
$PY -m tml.projects.twhin.run --config_yaml_path "$TWHIN_CONFIG" --save_dir "$GRAPH/model" --overwrite_save_dir \
  --set "train_data.data_root=$GRAPH/train/*.parquet" --set "validation_data.data_root=$GRAPH/valid/*.parquet" \
  --set 'link_prediction.known_edges=[]' --set "training.num_train_steps=$TWHIN_STEPS" \
  --set "training.checkpoint_every_n=$TWHIN_STEPS" --set "training.eval_log_every_n=$TWHIN_STEPS" \
  > "$WORK/twhin_train.log" 2>&1 || { tail -n 30 "$WORK/twhin_train.log"; exit 1; }
grep "final evaluation" "$WORK/twhin_train.log" || true
rm -rf "$EXPORT"
$PY -m tml.projects.twhin.embeddings export --source "$GRAPH/model" --out_dir "$EXPORT" --config_yaml_path "$TWHIN_CONFIG"

step "3/6 build the movie index (HNSW, inner product: the liked relation's ranking)"
$PY -m tml.projects.twhin.embeddings index --source "$EXPORT" --table movie --metric dot --kind hnsw

step "4/6 write the TwHIN vectors into the Heavy Ranker's rows"
# Most users rating after the split are new (no TwHIN vector: zeros); in training every user has one.
# Zeroing half of the training rows' user vectors teaches the ranker what a zero vector means.
for split in train validation; do
  DROP=()
  [ "$split" = train ] && DROP=(--drop twhin.user_embedding=0.5)
  $PY -m tml.projects.home.recap.twhin_features --embeddings "$EXPORT" --id_mapping "$GRAPH/mapping" \
    --input "$RECAP_DATA/$split/*.parquet" --output_dir "$RECAP_DATA/twhin/$split" "${DROP[@]}" \
    --feature twhin.user_embedding=user:meta.user_id --feature twhin.movie_embedding=movie:meta.movie_id
done

step "5/6 train the Heavy Ranker without and with TwHIN features ($RANKER_STEPS steps each)"
$PY -m tml.projects.home.recap.scripts.movielens_twhin_compare --data_dir "$RECAP_DATA" \
  --twhin_data_dir "$RECAP_DATA/twhin" --work_dir "$WORK/rankers" --seeds 0 \
  --set "training.num_train_steps=$RANKER_STEPS" --set "training.checkpoint_every_n=$RANKER_STEPS" \
  --set "training.eval_log_every_n=$RANKER_STEPS" > "$WORK/rankers.log" 2>&1 || { tail -n 30 "$WORK/rankers.log"; exit 1; }
sed -n '/per-task validation AUROC/,$p' "$WORK/rankers.log" | grep -v '^RESULT'
GAIN=$(sed -n 's/^RESULT twhin_features_auroc_gain=//p' "$WORK/rankers.log")

step "6/6 retrieve $K movies per user with TwHIN, rank them with the Heavy Ranker"
$PY -m tml.projects.home.recap.scripts.movielens_retrieve_rank --embeddings "$EXPORT" --twhin_data "$GRAPH" \
  --data_dir "$RECAP_DATA" --config_path projects/home/recap/config/movielens_twhin.yaml \
  --checkpoint "$WORK/rankers/with_twhin_seed0" --output "$WORK/ranked.parquet" --k "$K" \
  > "$WORK/retrieve_rank.log" 2>&1 || { tail -n 30 "$WORK/retrieve_rank.log"; exit 1; }
grep -v '^RESULT' "$WORK/retrieve_rank.log" | sed -n '/users with training ratings/,$p'
value() { sed -n "s/^RESULT $1=//p" "$WORK/retrieve_rank.log"; }

echo
echo "RESULT ranked_ndcg_at_10=$(value ranked_ndcg_at_10)"
echo "RESULT retrieval_ndcg_at_10=$(value retrieval_ndcg_at_10)"
echo "RESULT popular_ndcg_at_10=$(value popular_ndcg_at_10)"
echo "RESULT retrieval_recall_at_50=$(value retrieval_recall_at_50)"
echo "RESULT twhin_features_auroc_gain=$GAIN"
