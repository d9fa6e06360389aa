"""Top-level config of a TwHIN job: the original's structure (runtime, training, model, train_data,
validation_data) plus the link-prediction evaluation that the original lacked."""
from __future__ import annotations

from typing import List, Optional

from pydantic import Field, PositiveInt, field_validator

from tml.core.config import BaseConfig
from tml.core.config.training import RuntimeConfig, TrainingConfig
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.models.config import TwhinModelConfig


class LinkPredictionConfig(BaseConfig):
    """Filtered ranking of validation edges: each true tail (and head) against every row of its table."""

    enabled: bool = Field(True, description="Compute MRR / Hits@k on validation_data at each evaluation.")
    max_edges: Optional[PositiveInt] = Field(
        None, description="Rank only the first this many validation edges (in file order); None = all."
    )
    filtered: bool = Field(
        True,
        description="Remove other known true edges (train_data, validation_data and known_edges) from the "
        "candidates, as in the standard 'filtered' setting.",
    )
    known_edges: List[str] = Field(
        [], description="More edge files (globs) whose edges count as true for filtering, e.g. a test split."
    )
    hits_at: List[PositiveInt] = Field([1, 10], description="k of the Hits@k metrics.")
    query_chunk_size: PositiveInt = Field(256, description="Edges scored at once.")
    entity_chunk_size: PositiveInt = Field(65536, description="Candidate rows scored at once.")


class TwhinConfig(BaseConfig):
    runtime: RuntimeConfig = RuntimeConfig()
    training: TrainingConfig = TrainingConfig()
    model: TwhinModelConfig
    train_data: TwhinDataConfig
    validation_data: Optional[TwhinDataConfig] = Field(
        None, description="Edges to evaluate on (AUC and link prediction); None = no evaluation."
    )
    link_prediction: LinkPredictionConfig = LinkPredictionConfig()

    @field_validator("validation_data")
    @classmethod
    def _validation_reads_files(cls, data: Optional[TwhinDataConfig]) -> Optional[TwhinDataConfig]:
        # An evaluation needs the same complete pass each time; readers serve one endless stream.
        if data is not None and data.remote_readers:
            raise ValueError(
                "only train_data reads from remote readers; validation edges are read from "
                "validation_data.data_root (remove validation_data.remote_readers)."
            )
        return data
