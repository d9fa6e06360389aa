import pytest
import torch

from tml.projects.twhin.models.edge_scores import edge_scores, translation_edge_scores


def reference(lhs, rhs, tail_query, tail_bias, head_query, head_bias, rels, lhs_negatives, rhs_negatives):
    """The definition, edge by edge, with autograd."""
    positives = (rhs * tail_query).sum(-1) + tail_bias
    lhs_rows = lhs[lhs_negatives.clamp(min=0)[rels]]  # [B, N, D]
    rhs_rows = rhs[rhs_negatives.clamp(min=0)[rels]]
    lhs_side = (lhs_rows * head_query.unsqueeze(1)).sum(-1) + head_bias.unsqueeze(1)
    rhs_side = (rhs_rows * tail_query.unsqueeze(1)).sum(-1) + tail_bias.unsqueeze(1)
    return positives, lhs_side, rhs_side


def assert_same_outputs_and_gradients(fn, reference_fn, tensors, grads):
    """fn and reference_fn give the same outputs, and the same input gradients for `grads`."""
    results = []
    for function in (fn, reference_fn):
        leaves = [t.clone().requires_grad_() for t in tensors]
        outputs = function(*leaves)
        torch.autograd.backward(outputs[: len(grads)], grads)  # later outputs: no gradient
        results.append([o.detach() for o in outputs] + [leaf.grad for leaf in leaves])
    for mine, expected in zip(*results):
        torch.testing.assert_close(mine, expected)


def inputs(dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    size, dim, count = 7, 5, 3
    tensors = [torch.randn(size, dim, generator=generator, dtype=dtype) for _ in range(4)]
    biases = [torch.randn(size, generator=generator, dtype=dtype) for _ in range(2)]
    rels = torch.tensor([0, 2, 0, 1, 2, 2, 0])
    # Relation 1 has one edge (3): repeated, and a -1 row for a relation without edges (3).
    lhs_negatives = torch.tensor([[2, 0, 6], [3, 3, 3], [5, 1, 4], [-1, -1, -1]])
    rhs_negatives = torch.tensor([[6, 2, 0], [3, 3, 3], [4, 4, 1], [-1, -1, -1]])
    return tensors, biases, rels, lhs_negatives, rhs_negatives


def test_matches_the_definition_forward_and_backward():
    (lhs, rhs, tail_query, head_query), (tail_bias, head_bias), rels, lhs_negatives, rhs_negatives = inputs()
    grads = [torch.randn(7), torch.randn(7, 3), torch.randn(7, 3)]
    tensors = (lhs, rhs, tail_query, head_query, tail_bias, head_bias)

    def scores(fn):
        return lambda a, b, tq, hq, tb, hb: fn(a, b, tq, tb, hq, hb, rels, lhs_negatives, rhs_negatives)

    assert_same_outputs_and_gradients(scores(edge_scores), scores(reference), tensors, grads)


def test_gradcheck_in_double_precision_without_biases():
    (lhs, rhs, tail_query, head_query), _, rels, lhs_negatives, rhs_negatives = inputs(torch.float64)
    leaves = [t.requires_grad_() for t in (lhs, rhs, tail_query, head_query)]

    def scores(a, b, tq, hq):
        return edge_scores(a, b, tq, None, hq, None, rels, lhs_negatives, rhs_negatives)

    assert torch.autograd.gradcheck(scores, leaves)


def test_without_in_batch_negatives_only_positives_have_scores():
    (lhs, rhs, tail_query, head_query), _, rels, _, _ = inputs()
    empty = torch.empty(4, 0, dtype=torch.long)
    positives, lhs_side, rhs_side = edge_scores(lhs, rhs, tail_query, None, head_query, None, rels, empty, empty)
    torch.testing.assert_close(positives, (rhs * tail_query).sum(-1))
    assert lhs_side.shape == rhs_side.shape == (7, 0)


def translation_reference(lhs, rhs, relations, rels, lhs_negatives, rhs_negatives):
    """The translation operator's definition, l . (x + r), edge by edge, with autograd."""
    relation = relations[rels]
    head_query, tail_bias = rhs + relation, (lhs * relation).sum(-1)
    positives = (lhs * head_query).sum(-1)
    lhs_side = (lhs[lhs_negatives.clamp(min=0)[rels]] * head_query.unsqueeze(1)).sum(-1)
    rhs_side = (rhs[rhs_negatives.clamp(min=0)[rels]] * lhs.unsqueeze(1)).sum(-1) + tail_bias.unsqueeze(1)
    return positives, lhs_side, rhs_side, head_query, tail_bias


@pytest.mark.parametrize("query_gradients", [True, False])  # False: no global negatives use the queries
def test_translation_scores_match_the_definition_forward_and_backward(query_gradients):
    (lhs, rhs, _, _), _, rels, lhs_negatives, rhs_negatives = inputs()
    relations = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    grads = [torch.randn(7, generator=generator), torch.randn(7, 3, generator=generator),
             torch.randn(7, 3, generator=generator), torch.randn(7, 5, generator=generator),
             torch.randn(7, generator=generator)]
    grads = grads if query_gradients else grads[:3]

    def scores(fn):
        return lambda a, b, r: fn(a, b, r, rels, lhs_negatives, rhs_negatives)

    assert_same_outputs_and_gradients(
        scores(translation_edge_scores), scores(translation_reference), (lhs, rhs, relations), grads
    )


def test_translation_gradcheck_in_double_precision():
    (lhs, rhs, _, _), _, rels, lhs_negatives, rhs_negatives = inputs(torch.float64)
    relations = torch.randn(4, 5, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (lhs, rhs, relations)]
    assert torch.autograd.gradcheck(
        lambda a, b, r: translation_edge_scores(a, b, r, rels, lhs_negatives, rhs_negatives), leaves
    )
