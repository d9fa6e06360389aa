import pydantic
import pytest

from tml.core.optimizers import (
    AdagradConfig,
    AdamConfig,
    EmbeddingOptimizerConfig,
    LearningRate,
    OptimizerConfig,
    SgdConfig,
    get_learning_rate,
    get_optimizer_algorithm_config,
)
from tml.core.optimizers.config import LinearRampToConstant, LinearRampToCosine, PiecewiseConstant


def test_algorithm_defaults_match_the_original():
    assert AdamConfig(lr=0.1).betas == (0.9, 0.999)
    assert AdamConfig(lr=0.1).eps == 1e-7
    assert SgdConfig(lr=0.1).momentum == 0.0
    assert AdagradConfig(lr=0.1).eps == 0


def test_piecewise_needs_one_more_value_than_boundaries():
    with pytest.raises(pydantic.ValidationError, match=r"got 2 values for 2 boundaries"):
        PiecewiseConstant(learning_rate_boundaries=[5, 10], learning_rate_values=[1.0, 0.5])


@pytest.mark.parametrize("boundaries", [[10, 5], [5, 5]])
def test_piecewise_boundaries_must_strictly_increase(boundaries):
    with pytest.raises(pydantic.ValidationError, match=r"must be strictly increasing, got \[.*\]"):
        PiecewiseConstant(learning_rate_boundaries=boundaries, learning_rate_values=[1.0, 0.5, 0.1])


def test_cosine_final_step_must_be_after_the_ramp():
    with pytest.raises(
        pydantic.ValidationError,
        match=r"final_num_steps > num_ramp_steps, got final_num_steps=10, num_ramp_steps=10",
    ):
        LinearRampToCosine(learning_rate=1.0, final_learning_rate=0.1, num_ramp_steps=10, final_num_steps=10)


def test_ramp_steps_must_be_positive():
    with pytest.raises(pydantic.ValidationError, match=r"num_ramp_steps\n.*greater than 0"):
        LinearRampToConstant(learning_rate=1.0, num_ramp_steps=0)


def test_learning_rate_needs_exactly_one_schedule():
    with pytest.raises(pydantic.ValidationError, match="Exactly one of constant,linear_ramp_to_cosine"):
        LearningRate()
    with pytest.raises(pydantic.ValidationError, match="Exactly one of constant"):
        LearningRate(constant=0.1, linear_ramp_to_constant={"learning_rate": 0.1, "num_ramp_steps": 3})


def test_optimizer_config_from_yaml_like_dict_with_explicit_nulls():
    config = OptimizerConfig.model_validate(
        {"learning_rate": None, "adam": None, "sgd": {"lr": 0.05, "momentum": 0.9}, "adagrad": None}
    )
    assert get_optimizer_algorithm_config(config) == SgdConfig(lr=0.05, momentum=0.9)
    assert get_learning_rate(config) == LearningRate(constant=0.05)


def test_optimizer_config_needs_exactly_one_algorithm():
    with pytest.raises(pydantic.ValidationError, match="Exactly one of adam,sgd,adagrad required"):
        OptimizerConfig(adam={"lr": 0.1}, sgd={"lr": 0.1})
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        OptimizerConfig(sgd={"lr": 0.1, "nesterov": True})


def test_explicit_schedule_wins_over_the_algorithm_lr():
    schedule = {"linear_ramp_to_constant": {"learning_rate": 0.2, "num_ramp_steps": 5}}
    config = OptimizerConfig(adam={"lr": 0.1}, learning_rate=schedule)
    assert get_learning_rate(config) == LearningRate.model_validate(schedule)


def test_embedding_optimizer_offers_only_cpu_fusable_algorithms():
    config = EmbeddingOptimizerConfig(rowwise_adagrad={"lr": 0.01})
    assert get_optimizer_algorithm_config(config).eps == 1e-8
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        EmbeddingOptimizerConfig(adam={"lr": 0.01})
    with pytest.raises(pydantic.ValidationError, match="Exactly one of sgd,adagrad,rowwise_adagrad required"):
        EmbeddingOptimizerConfig()
