"""MaskNet (Wang et al. 2021, "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking
Models by Instance-Guided Mask"), with the original implementation's block semantics.

Difference from the paper, kept on purpose for fidelity with the production model: the paper's
MaskBlock ends with LayerNorm followed by ReLU; here (as in the original) the block output is the
LayerNorm output with no ReLU after it, in both the parallel and the serial arrangement.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from tml.projects.home.recap.model.config import MaskBlockConfig, MaskNetConfig
from tml.projects.home.recap.model.mlp import Mlp, init_linear


class MaskBlock(nn.Module):
    """out = LayerNorm(Linear(net * mask(mask_input))), mask = Linear(ReLU(Linear(mask_input))).

    The instance-guided mask is computed from `mask_input` (the MaskNet's input) and multiplies the
    block's own input `net` element-wise, so it has `input_dim` outputs.
    """

    def __init__(self, mask_block_config: MaskBlockConfig, input_dim: int, mask_input_dim: int) -> None:
        super().__init__()
        if mask_block_config.reduction_factor is not None:
            aggregation_size = int(mask_input_dim * mask_block_config.reduction_factor)
            if aggregation_size < 1:
                raise ValueError(
                    f"mask block reduction_factor {mask_block_config.reduction_factor} on a "
                    f"{mask_input_dim}-wide input leaves no hidden units."
                )
        else:
            aggregation_size = mask_block_config.aggregation_size
        self.input_layer_norm = nn.LayerNorm(input_dim) if mask_block_config.input_layer_norm else None
        self.mask_layer = nn.Sequential(
            init_linear(nn.Linear(mask_input_dim, aggregation_size)),
            nn.ReLU(),
            init_linear(nn.Linear(aggregation_size, input_dim)),
        )
        self.hidden_layer = init_linear(nn.Linear(input_dim, mask_block_config.output_size))
        # Paper: LayerNorm then ReLU. Original (kept): LayerNorm only.
        self.output_layer_norm = nn.LayerNorm(mask_block_config.output_size)
        self.out_features = mask_block_config.output_size

    def forward(self, net: torch.Tensor, mask_input: torch.Tensor) -> torch.Tensor:
        if self.input_layer_norm is not None:
            net = self.input_layer_norm(net)
        masked = net * self.mask_layer(mask_input)
        return self.output_layer_norm(self.hidden_layer(masked))


class MaskNet(nn.Module):
    """Parallel: every block reads the input, outputs concatenated. Serial: block i reads block i-1's
    output (the mask always reads the MaskNet's input). An optional MLP follows either way.

    Returns {"output", "shared_layer"}, where "shared_layer" is the blocks' output before the MLP.
    """

    def __init__(self, mask_net_config: MaskNetConfig, in_features: int) -> None:
        super().__init__()
        self.use_parallel = mask_net_config.use_parallel
        blocks = []
        if self.use_parallel:
            blocks = [MaskBlock(config, in_features, in_features) for config in mask_net_config.mask_blocks]
            blocks_out = sum(block.out_features for block in blocks)
        else:
            width = in_features
            for config in mask_net_config.mask_blocks:
                blocks.append(MaskBlock(config, width, in_features))
                width = config.output_size
            blocks_out = width
        self.mask_blocks = nn.ModuleList(blocks)
        self.mlp: Optional[Mlp] = (
            Mlp(blocks_out, mask_net_config.mlp) if mask_net_config.mlp is not None else None
        )
        self.in_features = in_features
        self.shared_size = blocks_out
        self.out_features = self.mlp.out_features if self.mlp is not None else blocks_out

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.use_parallel:
            blocks_output = torch.cat([block(inputs, inputs) for block in self.mask_blocks], dim=1)
        else:
            blocks_output = inputs
            for block in self.mask_blocks:
                blocks_output = block(blocks_output, inputs)
        output = self.mlp(blocks_output)["output"] if self.mlp is not None else blocks_output
        return {"output": output, "shared_layer": blocks_output}
