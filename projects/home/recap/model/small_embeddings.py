"""Small dense embedding tables, each over one column of `discrete_features` (one id per example)."""

from __future__ import annotations

import torch
from torch import nn

from tml.common.tracing import is_tracing
from tml.projects.home.recap.embedding.config import SmallEmbeddingsConfig


class SmallEmbeddings(nn.Module):
    """Outputs the tables' embeddings concatenated in config order: [B, sum(embedding_dim)]."""

    def __init__(self, config: SmallEmbeddingsConfig) -> None:
        super().__init__()
        names = [table.name for table in config.tables]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"small_embeddings tables must have unique names; repeated: {duplicates}.")
        self.tables = list(config.tables)
        self.embeddings = nn.ModuleDict(
            {table.name: nn.Embedding(table.num_embeddings, table.embedding_dim) for table in self.tables}
        )
        self.out_features = sum(table.embedding_dim for table in self.tables)

    def _check_ids(self, name: str, index: int, ids: torch.Tensor, num_embeddings: int) -> None:
        if ids.numel() == 0:
            return
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= num_embeddings:
            bad = low if low < 0 else high
            raise ValueError(
                f"small embedding table '{name}' got id {bad} from discrete feature column {index}; "
                f"ids must lie in [0, {num_embeddings})."
            )

    def forward(self, discrete_features: torch.Tensor) -> torch.Tensor:
        outputs = []
        for table in self.tables:
            if table.index >= discrete_features.shape[1]:
                raise ValueError(
                    f"small embedding table '{table.name}' reads discrete feature column {table.index}, "
                    f"but the batch has {discrete_features.shape[1]} discrete features."
                )
            ids = discrete_features[:, table.index].long()
            if not is_tracing():
                self._check_ids(table.name, table.index, ids, table.num_embeddings)
            outputs.append(self.embeddings[table.name](ids))
        return torch.cat(outputs, dim=1)
