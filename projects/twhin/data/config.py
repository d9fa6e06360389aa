"""Where a TwHIN job reads its edges, and how it batches and samples negatives for them."""
from __future__ import annotations

from typing import List, Optional

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from tml.core.config import BaseConfig


class TwhinDataConfig(BaseConfig):
    data_root: str = Field(
        description="Parquet edge files: a glob (`edges/*.parquet`), a directory (its *.parquet files) or one "
        "file, on local disk or any fsspec URL (gs://, s3://, ...). Files are taken in sorted order; names "
        "starting with '_' or '.' (e.g. _SUCCESS) are skipped."
    )
    per_replica_batch_size: PositiveInt = Field(description="Edges per batch on each rank.")
    global_negatives: NonNegativeInt = Field(
        0,
        description="Per edge and per side, this many uniform negatives: nodes drawn uniformly from the "
        "side's table (the lhs or rhs node type of the edge's relation), once per chunk and shared by its "
        "edges (PyTorch-BigGraph's num_uniform_negs).",
    )
    in_batch_negatives: NonNegativeInt = Field(
        10,
        description="Per edge and per side, this many in-batch negatives: the nodes of the first this many "
        "edges of the edge's chunk (its own node excluded). At most `chunk_size`.",
    )
    chunk_size: Optional[PositiveInt] = Field(
        None,
        description="Edges that share their negatives: each chunk's negative scores are one matrix product "
        "per side. None = 50 (PyTorch-BigGraph's), at least in_batch_negatives, at most the batch. Batches "
        "are rounded up to whole chunks.",
    )
    limit: Optional[PositiveInt] = Field(
        None,
        description="Use at most this many edges (rows), counted in file order after `offset`; None = all. "
        "Splits one edge set into train and validation together with `offset`.",
    )
    offset: Optional[NonNegativeInt] = Field(
        None, description="Skip this many edges (rows) in file order before taking `limit`; None = 0."
    )
    prefetch: NonNegativeInt = Field(
        2,
        description="Batches (with their negatives) prepared ahead in a background thread while the model "
        "trains, at least one chunk of up to 64 batches or 64k lookups (batches are sampled a chunk at a "
        "time); 0 prepares them in the training thread (better where the step is memory-bound; the "
        "README's `prefetch` row has the figures).",
    )
    shuffle: bool = Field(True, description="Shuffle each rank's edges anew every epoch.")
    seed: int = Field(0, description="Seed of the shuffles and of negative sampling (combined with rank and epoch).")
    lhs_column: str = Field("lhs", description="Column of left-hand node ids (row indices into the lhs table).")
    rel_column: str = Field("rel", description="Column of relation indices (positions in model.relations).")
    rhs_column: str = Field("rhs", description="Column of right-hand node ids (row indices into the rhs table).")
    weight_column: str = Field(
        "weight", description="Column of edge weights, used when the files have it; otherwise every edge weighs 1."
    )

    remote_readers: Optional[List[str]] = Field(
        None,
        description="host:port of reader processes (tml.projects.twhin.data.flight_reader) serving this "
        "config's ready edge batches over Arrow Flight; read round-robin instead of data_root, for "
        "training.num_train_steps steps (the readers repeat their edges). train_data only.",
    )

    @model_validator(mode="after")
    def _check_chunk_size(self) -> "TwhinDataConfig":
        if self.chunk_size is not None and self.in_batch_negatives > self.chunk_size:
            raise ValueError(
                f"in_batch_negatives ({self.in_batch_negatives}) are taken from the edge's chunk: they cannot "
                f"exceed chunk_size ({self.chunk_size})."
            )
        return self
