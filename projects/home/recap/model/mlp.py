"""Multi-layer perceptron used for towers, the MaskNet head, DCN's deep part and DLRM."""

from __future__ import annotations

import torch
from torch import nn

from tml.projects.home.recap.model.config import MlpConfig


def init_linear(layer: nn.Linear) -> nn.Linear:
    """Xavier-uniform weights and zero biases, as in the original."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class Mlp(nn.Module):
    """Hidden layers `Linear -> [BatchNorm] -> ReLU -> [Dropout]`, then a final `Linear [-> ReLU]`.

    Returns {"output": last activation, "shared_layer": output of the first hidden layer's block}.
    With a single layer there is no hidden block and "shared_layer" is the output (the original left
    it unbound then, spec B6).
    """

    def __init__(self, in_features: int, mlp_config: MlpConfig) -> None:
        super().__init__()
        sizes = list(mlp_config.layer_sizes)
        blocks: list[nn.Module] = []
        width = in_features
        for size in sizes[:-1]:
            layers: list[nn.Module] = [init_linear(nn.Linear(width, size))]
            if mlp_config.batch_norm is not None:
                layers.append(
                    nn.BatchNorm1d(
                        size, affine=mlp_config.batch_norm.affine, momentum=mlp_config.batch_norm.momentum
                    )
                )
            layers.append(nn.ReLU())
            if mlp_config.dropout is not None:
                layers.append(nn.Dropout(mlp_config.dropout.rate))
            blocks.append(nn.Sequential(*layers))
            width = size
        final: list[nn.Module] = [init_linear(nn.Linear(width, sizes[-1]))]
        if mlp_config.final_layer_activation:
            final.append(nn.ReLU())
        blocks.append(nn.Sequential(*final))
        self.layers = nn.ModuleList(blocks)
        self.in_features = in_features
        self.out_features = sizes[-1]
        self.shared_size = sizes[0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = x
        shared_layer = None
        for layer in self.layers:
            net = layer(net)
            if shared_layer is None:
                shared_layer = net
        return {"output": net, "shared_layer": shared_layer}
