import pytest
import torch

from tml.projects.twhin.models.gathered_dots import gathered_dots


def plain(rows, index, query):
    return (rows[index] * query.unsqueeze(1)).sum(-1)


def test_matches_the_plain_expression_forward_and_backward_on_strided_rows():
    torch.manual_seed(0)
    pairs = torch.randn(6, 2, 5)  # rows as the model has them: every other row of one tensor
    index = torch.tensor([[1, 1, 4], [0, 5, 2], [3, 3, 3], [2, 0, 1], [5, 4, 0], [1, 2, 3]])  # repeats included
    grad = torch.randn(6, 3)
    results = []
    for fn in (plain, gathered_dots):
        source = pairs.clone().requires_grad_()
        query = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)).requires_grad_()
        rows = source.unbind(1)[0]
        assert not rows.is_contiguous()
        scores = fn(rows, index, query)
        scores.backward(grad)
        results.append((scores.detach(), source.grad, query.grad))
    for mine, reference in zip(results[1], results[0]):
        torch.testing.assert_close(mine, reference)


def test_gradcheck_in_double_precision():
    rows = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    query = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[0, 6], [6, 6], [2, 3]])
    assert torch.autograd.gradcheck(lambda r, q: gathered_dots(r, index, q), (rows, query))


def test_only_the_needed_gradients_are_computed():
    rows = torch.randn(4, 3, requires_grad=True)
    query = torch.randn(2, 3)  # no gradient wanted
    gathered_dots(rows, torch.tensor([[0, 1], [2, 3]]), query).sum().backward()
    torch.testing.assert_close(rows.grad, torch.cat([query[0].expand(2, 3), query[1].expand(2, 3)]))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"index \[B, k\]"):
        gathered_dots(torch.randn(4, 3), torch.tensor([0, 1]), torch.randn(2, 3))
