"""Deep & Cross Network v2 (Wang et al. 2021, "DCN V2"). The original only had its config.

Cross layer l: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, with W_l full rank or, given `projection_dim`
r, the low-rank product U_l V_l^T (d x r times r x d). `poly_degree` layers give feature crosses up to
degree poly_degree + 1.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from tml.projects.home.recap.model.config import DcnConfig
from tml.projects.home.recap.model.mlp import Mlp, init_linear


class CrossLayer(nn.Module):
    def __init__(self, in_features: int, projection_dim: Optional[int]) -> None:
        super().__init__()
        if projection_dim is None:
            self.weight = init_linear(nn.Linear(in_features, in_features))
        else:
            self.weight = nn.Sequential(
                init_linear(nn.Linear(in_features, projection_dim, bias=False)),
                init_linear(nn.Linear(projection_dim, in_features)),
            )

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.weight(x) + x


class CrossNetwork(nn.Module):
    def __init__(self, in_features: int, num_layers: int, projection_dim: Optional[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossLayer(in_features, projection_dim) for _ in range(num_layers))
        self.out_features = in_features

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class Dcn(nn.Module):
    """Cross network with an optional deep MLP beside it (`use_parallel`) or after it, then an optional
    output MLP. Returns {"output", "shared_layer"} ("shared_layer" = the combined output before the
    output MLP)."""

    def __init__(self, dcn_config: DcnConfig, in_features: int) -> None:
        super().__init__()
        self.cross = CrossNetwork(in_features, dcn_config.poly_degree, dcn_config.projection_dim)
        self.use_parallel = dcn_config.use_parallel
        self.deep: Optional[Mlp] = None
        combined = in_features
        if dcn_config.parallel_mlp is not None:
            self.deep = Mlp(in_features, dcn_config.parallel_mlp)
            combined = in_features + self.deep.out_features if self.use_parallel else self.deep.out_features
        self.output_mlp: Optional[Mlp] = (
            Mlp(combined, dcn_config.output_mlp) if dcn_config.output_mlp is not None else None
        )
        self.in_features = in_features
        self.shared_size = combined
        self.out_features = self.output_mlp.out_features if self.output_mlp is not None else combined

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        crossed = self.cross(inputs)
        if self.deep is None:
            combined = crossed
        elif self.use_parallel:
            combined = torch.cat([crossed, self.deep(inputs)["output"]], dim=1)
        else:
            combined = self.deep(crossed)["output"]
        output = self.output_mlp(combined)["output"] if self.output_mlp is not None else combined
        return {"output": output, "shared_layer": combined}
