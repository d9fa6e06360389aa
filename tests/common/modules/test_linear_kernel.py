"""`runtime.linear_kernel`: oneDNN's products give nn.Linear's results and gradients, only the
large plain Linear layers switch, and every case the fast path does not cover is nn.Linear's own."""
from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tml.common.modules import linear_kernel
from tml.core.config import ConfigError
from tml.common.modules.linear_kernel import (
    MIN_ONEDNN_WEIGHTS,
    OneDnnLinear,
    onednn_linear_works,
    resolve_linear_kernel,
    use_linear_kernel,
)

CPU = torch.device("cpu")
ON_X86 = platform.machine().lower() in {"x86_64", "amd64"}
needs_onednn = pytest.mark.skipif(not onednn_linear_works(), reason="this torch build has no oneDNN linear")


def twin_layers(in_features: int, out_features: int, bias: bool = True) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    reference = nn.Linear(in_features, out_features, bias=bias)
    fast = nn.Linear(in_features, out_features, bias=bias)
    fast.load_state_dict(reference.state_dict())
    fast.__class__ = OneDnnLinear
    return reference, fast


def outputs_and_gradients(layer: nn.Linear, inputs: torch.Tensor) -> list[torch.Tensor]:
    inputs = inputs.detach().requires_grad_(True)
    output = layer(inputs)
    weights = torch.linspace(-1.0, 1.0, output.numel()).reshape(output.shape)  # a non-uniform output gradient
    parameters = [p for p in (layer.weight, layer.bias) if p is not None]
    return [output.detach(), *torch.autograd.grad((output * weights).sum(), [inputs, *parameters])]


def test_onednn_linear_works_on_x86_cpus():
    if not ON_X86:
        pytest.skip("auto uses oneDNN on x86-64 only")
    assert onednn_linear_works()


@pytest.mark.parametrize(
    "vendor, expected",
    [("AuthenticAMD", "onednn"), ("HygonGenuine", "onednn"), ("GenuineIntel", "torch"), (None, "torch")],
)
def test_auto_uses_onednn_where_mkl_is_not_on_its_own_vendor(monkeypatch, vendor, expected):
    if not ON_X86 or not onednn_linear_works():
        pytest.skip("auto uses oneDNN on x86-64 only")
    monkeypatch.setattr(linear_kernel, "cpu_vendor", lambda: vendor)
    assert resolve_linear_kernel("auto", CPU) == expected
    assert resolve_linear_kernel("onednn", CPU) == "onednn"  # asked for by name, on any vendor


def test_the_vendor_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC\n")
    assert linear_kernel.cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # Arm: no vendor_id line
    assert linear_kernel.cpu_vendor(str(cpuinfo)) is None
    assert linear_kernel.cpu_vendor(str(tmp_path / "missing")) is None


@needs_onednn
@pytest.mark.parametrize(
    "make_inputs",
    [
        lambda: torch.randn(33, 70),  # the step's case: a 2-D batch
        lambda: torch.randn(4, 9, 70),  # leading dimensions are flattened and restored
        lambda: torch.randn(70, 33).t(),  # a transposed (strided) batch
        lambda: torch.randn(70),  # one example without a batch dimension
    ],
    ids=["2d", "3d", "strided", "1d"],
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_onednn_layer_matches_nn_linear_forward_and_backward(make_inputs, bias):
    reference, fast = twin_layers(70, 50, bias)
    torch.manual_seed(1)
    inputs = make_inputs()
    expected = outputs_and_gradients(reference, inputs)
    got = outputs_and_gradients(fast, inputs)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for name, g, e in zip(["output", "input grad", "weight grad", "bias grad"], got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=name)


@needs_onednn
def test_frozen_weights_get_no_gradient_and_the_bias_still_does():
    reference, fast = twin_layers(70, 50)
    fast.weight.requires_grad_(False)
    output = fast(torch.randn(8, 70))  # the input needs no gradient
    output.sum().backward()
    assert fast.weight.grad is None
    torch.testing.assert_close(fast.bias.grad, torch.full((50,), 8.0))


@needs_onednn
def test_what_the_fast_path_does_not_cover_is_nn_linear_itself():
    reference, fast = twin_layers(70, 50)
    inputs = torch.randn(6, 70)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast decides the dtype: bf16 products
        expected, got = reference(inputs), fast(inputs)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected)
    assert fast(torch.randn(0, 70)).shape == (0, 50)  # an empty batch
    reference.double(), fast.double()  # float64 (in place)
    assert torch.equal(fast(inputs.double()), reference(inputs.double()))


@needs_onednn
def test_only_large_plain_linear_layers_switch_and_keep_their_parameters():
    class CustomLinear(nn.Linear):
        """A subclass has its own forward: never retyped."""

    side = 1 << 9  # 512 x 512 = 2^18 weights: at the threshold
    assert side * side == MIN_ONEDNN_WEIGHTS
    model = nn.Sequential(nn.Linear(side, side), nn.ReLU(), nn.Linear(side, 8), CustomLinear(side, side))
    parameters = [id(p) for p in model.parameters()]
    keys = list(model.state_dict())

    assert use_linear_kernel(model, "torch", CPU) == 0
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, CustomLinear]

    assert use_linear_kernel(model, "onednn", CPU) == 1
    assert [type(m) for m in model] == [OneDnnLinear, nn.ReLU, nn.Linear, CustomLinear]
    assert isinstance(model[0], nn.Linear)
    assert [id(p) for p in model.parameters()] == parameters
    assert list(model.state_dict()) == keys


def test_other_devices_keep_torchs_products():
    assert resolve_linear_kernel("auto", torch.device("cuda")) == "torch"
    assert resolve_linear_kernel("onednn", torch.device("cuda")) == "torch"
    assert resolve_linear_kernel("torch", CPU) == "torch"


def test_asking_for_onednn_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(linear_kernel, "onednn_linear_works", lambda: False)
    with pytest.raises(ConfigError, match="runtime.linear_kernel is 'onednn'"):  # `error:` line, no traceback
        use_linear_kernel(nn.Linear(1024, 1024), "onednn", CPU)
    assert resolve_linear_kernel("auto", CPU) == "torch"  # auto quietly keeps torch's


@needs_onednn
def test_a_model_trained_with_either_kernel_learns_the_same():
    """Same math: 100 Adam steps of a 2-layer regression end at the same loss and nearly the same weights."""

    def train(kernel: str) -> tuple[float, float, nn.Module]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(600, 512), nn.ReLU(), nn.Linear(512, 1))
        assert use_linear_kernel(model, kernel, CPU) == (1 if kernel == "onednn" else 0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(1)
        target_weights = torch.randn(600, 1, generator=generator) / 25
        losses = []
        for _ in range(100):
            inputs = torch.randn(64, 600, generator=generator)
            loss = F.mse_loss(model(inputs), torch.tanh(inputs @ target_weights))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses[0], losses[-1], model

    torch_first, torch_last, torch_model = train("torch")
    onednn_first, onednn_last, onednn_model = train("onednn")
    assert torch_last < 0.3 * torch_first  # it learned
    assert onednn_first == pytest.approx(torch_first, rel=1e-5)
    assert onednn_last == pytest.approx(torch_last, rel=1e-2)
    for (name, a), b in zip(torch_model.named_parameters(), onednn_model.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-3, msg=name)


@needs_onednn
def test_a_switched_model_can_be_traced_and_exported():
    """torchrec's train pipeline FX-traces the model to find the sharded modules' inputs; serving exports it."""
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU())
    use_linear_kernel(model, "onednn", CPU)
    inputs = torch.randn(4, 512)
    expected = model(inputs)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(inputs), expected, rtol=1e-5, atol=1e-5)
    exported = torch.export.export(model, (inputs,))
    torch.testing.assert_close(exported.module()(inputs), expected, rtol=1e-5, atol=1e-5)
