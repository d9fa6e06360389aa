import pytest
import torch

from tml.projects.twhin.models.pooled_rows import take_rows


@pytest.mark.parametrize("source_rows", [7, 9])  # every row taken / two rows no lookup takes
def test_matches_index_select_and_split_forward_and_backward(source_rows):
    torch.manual_seed(0)
    rows = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    grads = [torch.randn(2, 3), torch.randn(3, 3), torch.randn(2, 3)]
    results = []
    for fn in (lambda s: s.index_select(0, rows).split([2, 3, 2]), lambda s: take_rows(s, rows, [2, 3, 2])):
        source = torch.randn(source_rows, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
        parts = fn(source)
        torch.autograd.backward(parts, grads)
        results.append(([part.detach() for part in parts], source.grad))
    for mine, expected in zip(results[1][0], results[0][0]):
        torch.testing.assert_close(mine, expected)
    torch.testing.assert_close(results[1][1], results[0][1])
    if source_rows > 7:
        assert results[1][1][7:].eq(0).all()  # untaken rows get a zero gradient


def test_a_part_without_gradient_contributes_zeros():
    source = torch.randn(4, 2, requires_grad=True)
    first, second = take_rows(source, torch.tensor([3, 1, 0, 2]), [2, 2])
    first.sum().backward()
    torch.testing.assert_close(source.grad, torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]))


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="take_rows needs"):
        take_rows(torch.randn(4), torch.tensor([0]), [1])


def test_side_blocks_are_views_of_the_pooled_rows_and_write_each_gradient_once():
    from tml.projects.twhin.models.pooled_rows import take_side_blocks

    torch.manual_seed(0)
    pooled = torch.randn(5, 3 * 2, requires_grad=True)  # 5 rows: 2 edges, 3 sampled; 3 tables of dim 2
    lhs, rhs, lhs_sampled, rhs_sampled = take_side_blocks(pooled, 2, 2, 0, 2)
    assert lhs.data_ptr() == pooled[:, 4:].data_ptr()  # no copy
    torch.testing.assert_close(lhs, pooled[:2, 4:6])
    torch.testing.assert_close(rhs, pooled[:2, 0:2])
    torch.testing.assert_close(lhs_sampled, pooled[2:, 4:6])
    torch.testing.assert_close(rhs_sampled, pooled[2:, 0:2])
    grads = [torch.randn(2, 2), torch.randn(2, 2), torch.randn(3, 2)]
    torch.autograd.backward([lhs, rhs, lhs_sampled], grads)  # rhs_sampled unused
    expected = torch.zeros(5, 6)
    expected[:2, 4:6], expected[:2, 0:2], expected[2:, 4:6] = grads
    torch.testing.assert_close(pooled.grad, expected)  # the unused table's columns get zeros


def test_side_blocks_need_two_tables():
    from tml.projects.twhin.models.pooled_rows import take_side_blocks

    with pytest.raises(ValueError, match="two tables"):
        take_side_blocks(torch.randn(4, 4), 2, 1, 1, 2)
