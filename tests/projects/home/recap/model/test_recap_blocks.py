import math

import pytest
import torch

from tml.projects.home.recap.embedding.config import SmallEmbeddingsConfig
from tml.projects.home.recap.model.config import (
    DcnConfig,
    DLRMConfig,
    MaskBlockConfig,
    MaskNetConfig,
    MlpConfig,
    PositionDebiasConfig,
)
from tml.projects.home.recap.model.dcn import Dcn
from tml.projects.home.recap.model.dlrm import DENSE, EMBEDDING, Dlrm, FeatureSegment
from tml.projects.home.recap.model.mask_net import MaskBlock, MaskNet
from tml.projects.home.recap.model.mlp import Mlp
from tml.projects.home.recap.model.numeric_calibration import NumericCalibration
from tml.projects.home.recap.model.position_debias import PositionDebias
from tml.projects.home.recap.model.small_embeddings import SmallEmbeddings


def block_config(**fields) -> MaskBlockConfig:
    return MaskBlockConfig.model_validate({"input_layer_norm": False, **fields})


def test_mlp_with_a_single_layer_works():
    mlp = Mlp(5, MlpConfig(layer_sizes=[1]))
    out = mlp(torch.randn(3, 5))
    assert out["output"].shape == (3, 1)
    assert out["shared_layer"] is out["output"]


def test_mlp_layers_batch_norm_dropout_and_final_activation():
    config = MlpConfig(
        layer_sizes=[4, 3, 2],
        batch_norm={"affine": False, "momentum": 0.2},
        dropout={"rate": 0.3},
        final_layer_activation=True,
    )
    mlp = Mlp(5, config)
    hidden = mlp.layers[0]
    assert [type(m).__name__ for m in hidden] == ["Linear", "BatchNorm1d", "ReLU", "Dropout"]
    assert hidden[1].momentum == 0.2 and hidden[1].weight is None and hidden[3].p == 0.3
    assert torch.count_nonzero(hidden[0].bias) == 0
    out = mlp.eval()(torch.randn(6, 5))
    assert out["shared_layer"].shape == (6, 4) and (out["shared_layer"] >= 0).all()
    assert out["output"].shape == (6, 2) and (out["output"] >= 0).all()
    assert mlp.out_features == 2


def _set_linear(layer: torch.nn.Linear, weight, bias=None) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(
            torch.tensor(bias, dtype=torch.float32) if bias is not None else torch.zeros_like(layer.bias)
        )


def _layer_norm(values: list[float], eps: float = 1e-5) -> list[float]:
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(variance + eps) for v in values]


def test_mask_block_matches_hand_computation():
    block = MaskBlock(block_config(output_size=3, aggregation_size=1), input_dim=2, mask_input_dim=2)
    _set_linear(block.mask_layer[0], [[1.0, 1.0]])
    _set_linear(block.mask_layer[2], [[1.0], [2.0]], [0.5, 0.0])
    _set_linear(block.hidden_layer, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    net, mask_input = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    # aggregation = relu(3 - 1) = 2; mask = [2 + 0.5, 4]; masked = [2.5, 8]; hidden = [2.5, 8, 10.5]
    expected = _layer_norm([2.5, 8.0, 10.5])
    assert block(net, mask_input)[0].tolist() == pytest.approx(expected, rel=1e-5)
    # No ReLU after the LayerNorm (unlike the paper): negative outputs survive.
    assert block(net, mask_input)[0, 0] < 0


def test_mask_block_reduction_factor_and_input_layer_norm():
    block = MaskBlock(block_config(output_size=3, reduction_factor=0.5, input_layer_norm=True), 4, 6)
    assert block.mask_layer[0].out_features == 3 and block.mask_layer[2].out_features == 4
    x, mask_input = torch.randn(2, 4), torch.randn(2, 6)
    expected = block.output_layer_norm(
        block.hidden_layer(torch.nn.functional.layer_norm(x, (4,)) * block.mask_layer(mask_input))
    )
    torch.testing.assert_close(block(x, mask_input), expected)


def test_serial_mask_net_with_mlp_works():
    config = MaskNetConfig(
        mask_blocks=[
            block_config(output_size=5, aggregation_size=4),
            block_config(output_size=3, reduction_factor=2.0),
        ],
        mlp={"layer_sizes": [2]},
        use_parallel=False,
    )
    net = MaskNet(config, in_features=7)
    assert net.mask_blocks[1].mask_layer[0].in_features == 7  # masks always read the input
    assert net.mask_blocks[1].hidden_layer.in_features == 5  # blocks are chained
    x = torch.randn(4, 7)
    out = net(x)
    assert out["output"].shape == (4, 2) and out["shared_layer"].shape == (4, 3)
    torch.testing.assert_close(out["shared_layer"], net.mask_blocks[1](net.mask_blocks[0](x, x), x))
    out["output"].sum().backward()
    assert net.mask_blocks[0].hidden_layer.weight.grad is not None


def test_parallel_mask_net_concatenates_blocks():
    config = MaskNetConfig(
        mask_blocks=[
            block_config(output_size=5, aggregation_size=4),
            block_config(output_size=3, aggregation_size=2),
        ],
        use_parallel=True,
    )
    net = MaskNet(config, in_features=7)
    x = torch.randn(4, 7)
    out = net(x)
    assert net.out_features == 8 and out["output"].shape == (4, 8)
    torch.testing.assert_close(out["output"][:, 5:], net.mask_blocks[1](x, x))


def test_cross_layer_matches_hand_computation():
    dcn = Dcn(DcnConfig(poly_degree=2), in_features=2)
    for layer in dcn.cross.layers:
        _set_linear(layer.weight, [[1.0, 0.0], [0.0, 1.0]], [0.0, 1.0])
    # x1 = x0 * (x0 + b) + x0 = [1*1+1, 2*3+2] = [2, 8]; x2 = x0 * (x1 + b) + x1 = [1*2+2, 2*9+8] = [4, 26]
    assert dcn(torch.tensor([[1.0, 2.0]]))["output"].tolist() == [[4.0, 26.0]]


@pytest.mark.parametrize("use_parallel, width", [(True, 6 + 3), (False, 3)])
def test_dcn_deep_part_beside_or_after_the_cross_network(use_parallel, width):
    config = DcnConfig(
        poly_degree=3, projection_dim=2, parallel_mlp={"layer_sizes": [4, 3]}, use_parallel=use_parallel
    )
    dcn = Dcn(config, in_features=6)
    assert dcn.cross.layers[0].weight[0].out_features == 2  # low rank
    assert dcn(torch.randn(5, 6))["output"].shape == (5, width)
    with_output = Dcn(config.model_copy(update={"output_mlp": MlpConfig(layer_sizes=[1])}), in_features=6)
    assert with_output(torch.randn(5, 6))["output"].shape == (5, 1)


def test_dlrm_bottom_mlp_dot_interactions_and_top_mlp():
    layout = [
        FeatureSegment("features", 3, DENSE),
        FeatureSegment("a", 2, EMBEDDING),
        FeatureSegment("b", 4, EMBEDDING),
    ]
    dlrm = Dlrm(DLRMConfig(bottom_mlp={"layer_sizes": [5, 2]}, top_mlp={"layer_sizes": [3, 1]}), 9, layout)
    assert dlrm.top_mlp.in_features == 2 + 3  # bottom output + 3 pairs of 3 vectors
    assert isinstance(dlrm.embedding_projections[0], torch.nn.Identity)
    x = torch.randn(4, 9)
    bottom = dlrm.bottom_mlp(x[:, :3])["output"]
    a, b = x[:, 3:5], dlrm.embedding_projections[1](x[:, 5:])
    pairs = torch.stack([(bottom * a).sum(1), (bottom * b).sum(1), (a * b).sum(1)], dim=1)
    expected = dlrm.top_mlp(torch.cat([bottom, pairs], 1))["output"]
    torch.testing.assert_close(dlrm(x)["output"], expected)


def test_dlrm_without_layout_is_bottom_then_top_mlp():
    dlrm = Dlrm(DLRMConfig(bottom_mlp={"layer_sizes": [4]}, top_mlp={"layer_sizes": [1]}), 6)
    x = torch.randn(3, 6)
    torch.testing.assert_close(dlrm(x)["output"], dlrm.top_mlp(dlrm.bottom_mlp(x)["output"])["output"])


def test_numeric_calibration_formula():
    calibration = NumericCalibration(pos_downsampling_rate=0.5, neg_downsampling_rate=0.1)
    # ratio = 0.2: p * r / (1 - p + p * r)
    out = calibration(torch.tensor([0.5, 0.0, 1.0, 0.9]))
    assert out.tolist() == pytest.approx([0.1 / 0.6, 0.0, 1.0, 0.18 / 0.28])
    assert NumericCalibration(1.0, 1.0)(torch.tensor([0.3])).item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="must lie in"):
        NumericCalibration(0.0, 1.0)


def test_numeric_calibration_undoes_negative_down_sampling():
    true_rate, neg_rate = 0.02, 0.1
    observed = true_rate / (true_rate + (1 - true_rate) * neg_rate)
    assert NumericCalibration(1.0, neg_rate)(torch.tensor(observed)).item() == pytest.approx(true_rate)


def test_position_debias_buckets_drops_and_hides_position_at_eval():
    debias = PositionDebias(
        PositionDebiasConfig(max_position=3, num_dims=2, drop_probability=0.0, position_feature_index=1)
    )
    discrete = torch.tensor([[9, 0], [9, 2], [9, 50], [9, -1]])
    assert debias.bucket(discrete).tolist() == [0, 2, 3, 4]
    weight = debias.embedding.weight
    torch.testing.assert_close(debias.train()(discrete), weight[[0, 2, 3, 4]])
    torch.testing.assert_close(debias.eval()(discrete), weight[[4, 4, 4, 4]])
    debias.use_position_at_eval = True
    torch.testing.assert_close(debias(discrete), weight[[0, 2, 3, 4]])
    debias.drop_probability = 1.0
    torch.testing.assert_close(debias.train()(discrete), weight[[4, 4, 4, 4]])
    with pytest.raises(ValueError, match="position_feature_index 1 is outside the 1 discrete features"):
        debias(torch.zeros(2, 1, dtype=torch.long))


def test_small_embeddings_look_up_columns_by_index():
    config = SmallEmbeddingsConfig.model_validate(
        {
            "tables": [
                {"name": "a", "num_embeddings": 4, "embedding_dim": 2, "index": 2},
                {"name": "b", "num_embeddings": 3, "embedding_dim": 3, "index": 0},
            ]
        }
    )
    small = SmallEmbeddings(config)
    discrete = torch.tensor([[1, 9, 3], [2, 9, 0]])
    out = small(discrete)
    torch.testing.assert_close(out[:, :2], small.embeddings["a"].weight[[3, 0]])
    torch.testing.assert_close(out[:, 2:], small.embeddings["b"].weight[[1, 2]])
    with pytest.raises(
        ValueError, match=r"table 'a' got id 4 from discrete feature column 2; ids must lie in \[0, 4\)"
    ):
        small(torch.tensor([[0, 0, 4]]))
    with pytest.raises(ValueError, match="table 'b' got id -1"):
        small(torch.tensor([[-1, 0, 0]]))
