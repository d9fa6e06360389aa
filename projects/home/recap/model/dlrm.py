"""DLRM (Naumov et al. 2019) over the ranking model's concatenated input. The original only had its config.

The input row is a concatenation of named segments (see `FeatureSegment`), which the ranking model
describes when it builds the network:
- "dense" segments: the featurized continuous/binary features (and, for share_partial towers, the
  backbone output) go through the bottom MLP, giving a D-wide vector (D = bottom_mlp's last size);
- "embedding" segments: each large-embedding table, small-embedding table, TwHIN embedding and the
  position embedding is one vector. One whose width differs from D is first projected to D by a
  bias-free linear layer (plain DLRM would require every embedding to be D wide).
The top MLP reads the bottom output concatenated with the dot products of every pair among
{bottom output, embeddings} (the strict upper triangle of their Gram matrix).
Without embedding segments (e.g. a share_all tower, whose input is the backbone output) this is just
the bottom MLP followed by the top MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from tml.projects.home.recap.model.config import DLRMConfig
from tml.projects.home.recap.model.mlp import Mlp, init_linear

DENSE = "dense"
EMBEDDING = "embedding"


@dataclass(frozen=True)
class FeatureSegment:
    """`width` consecutive columns of the model input, named for errors and logs."""

    name: str
    width: int
    kind: str  # DENSE or EMBEDDING


class Dlrm(nn.Module):
    def __init__(
        self,
        dlrm_config: DLRMConfig,
        in_features: int,
        feature_layout: Optional[Sequence[FeatureSegment]] = None,
    ) -> None:
        super().__init__()
        layout = list(feature_layout) if feature_layout else [FeatureSegment("input", in_features, DENSE)]
        if sum(segment.width for segment in layout) != in_features:
            raise ValueError(
                f"DLRM feature layout covers {sum(s.width for s in layout)} columns, input has {in_features}."
            )
        bounds, start = [], 0
        for segment in layout:
            bounds.append((start, start + segment.width))
            start += segment.width
        self._dense_bounds = [b for b, s in zip(bounds, layout) if s.kind == DENSE]
        self._embedding_bounds = [b for b, s in zip(bounds, layout) if s.kind == EMBEDDING]
        dense_width = sum(end - begin for begin, end in self._dense_bounds)
        if dense_width == 0:
            raise ValueError("DLRM needs dense input features for its bottom MLP; the input has none.")

        self.bottom_mlp = Mlp(dense_width, dlrm_config.bottom_mlp)
        vector_size = self.bottom_mlp.out_features
        embedding_segments = [s for s in layout if s.kind == EMBEDDING]
        self.embedding_projections = nn.ModuleList(
            (
                nn.Identity()
                if s.width == vector_size
                else init_linear(nn.Linear(s.width, vector_size, bias=False))
            )
            for s in embedding_segments
        )
        num_vectors = 1 + len(embedding_segments)
        rows, cols = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.register_buffer("_pair_rows", rows, persistent=False)
        self.register_buffer("_pair_cols", cols, persistent=False)
        self.top_mlp = Mlp(vector_size + rows.numel(), dlrm_config.top_mlp)
        self.in_features = in_features
        self.shared_size = vector_size + rows.numel()
        self.out_features = self.top_mlp.out_features

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        dense = torch.cat([inputs[:, begin:end] for begin, end in self._dense_bounds], dim=1)
        bottom = self.bottom_mlp(dense)["output"]
        if self._embedding_bounds:
            vectors = [bottom] + [
                projection(inputs[:, begin:end])
                for projection, (begin, end) in zip(self.embedding_projections, self._embedding_bounds)
            ]
            stacked = torch.stack(vectors, dim=1)  # [B, V, D]
            gram = torch.bmm(stacked, stacked.transpose(1, 2))  # [B, V, V]
            interactions = gram[:, self._pair_rows, self._pair_cols]
            top_input = torch.cat([bottom, interactions], dim=1)
        else:
            top_input = bottom
        return {"output": self.top_mlp(top_input)["output"], "shared_layer": top_input}
