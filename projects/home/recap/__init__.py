"""The Heavy Ranker of the For You timeline: data, model, training and scoring."""
from tml.common.allocator import keep_arrow_freed_memory

# The loader's batch arrays and Parquet decoding use Arrow's allocator; keep what it frees (a no-op
# if pyarrow was imported first; see tml.common.allocator).
keep_arrow_freed_memory()
