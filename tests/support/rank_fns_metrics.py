"""Rank functions for the loss and metrics tests (spawned ranks import them by name)."""
import torch

from tml.core.losses import get_global_loss_detached


def global_loss_rank(rank: int, world_size: int) -> tuple:
    local = torch.tensor(float(rank + 1), requires_grad=True)
    mean = get_global_loss_detached(local)
    total = get_global_loss_detached(local, reduction="sum")
    return mean.item(), total.item(), local.item()


# --- metrics on two ranks -------------------------------------------------------------------------
TASKS = ["recap.engagement.is_favorited", "recap.engagement.is_replied"]
BATCH_ROWS = (slice(0, 70), slice(70, 120))  # uneven halves: list states of different lengths


def make_outputs(seed: int = 0, batch_size: int = 120) -> dict:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, 2, generator=generator)
    probabilities = torch.sigmoid(logits)
    scores = torch.randint(0, 8, (batch_size, 2), generator=generator).float() / 8  # ties for AUROC
    return {
        "logits": logits,
        "probabilities": probabilities,
        "calibrated_probabilities": probabilities * 0.8,
        "labels": (torch.rand(batch_size, 2, generator=generator) < probabilities).float(),
        "weights": torch.rand(batch_size, 2, generator=generator) + 0.5,
        "scores": scores,
        "task_names": list(TASKS),
    }


def batch(outputs: dict, index: int) -> dict:
    rows = BATCH_ROWS[index]
    return {key: (value[rows] if torch.is_tensor(value) else value) for key, value in outputs.items()}


def build_metrics() -> tuple:
    from tml.core import metrics as m

    generator = torch.Generator()
    metrics = {
        "stable_mean": m.StableMean(),
        "auroc_mwu": m.AUROCWithMWU(),
        "rce": m.RCE(),
        "nrce": m.NRCE(),
        "count": m.Count(task="recap.engagement.is_replied"),
        "ctr": m.Ctr(task_idx=0, weighted=True),
        "pctr": m.Pctr(task_idx=1),
        "precision": m.Precision(task_idx=0),
        "recall": m.Recall(task_idx=0),
        "torchmetrics_auroc": m.TorchMetricsRocauc(task_idx=1),
        "calibration": m.Calibration(task_idx=1),
        "pos_ranks": m.PosRanks(),
        "reciprocal_rank": m.ReciprocalRank(),
        "hit_at_3": m.HitAtK(3),
        "sampled_auc": m.Auc(1000, generator=generator),
        "collection": m.get_multi_task_metrics(TASKS),
    }
    return metrics, generator


def update_all(metrics: dict, generator: torch.Generator, outputs: dict, batch_index: int) -> None:
    column = {"target": outputs["labels"][:, 0], "weight": outputs["weights"][:, 0]}
    metrics["stable_mean"].update(outputs["logits"][:, 0], outputs["weights"][:, 0])
    metrics["auroc_mwu"].update(outputs["scores"][:, 0], **column)
    metrics["rce"].update(outputs["probabilities"][:, 0], **column)
    metrics["nrce"].update(outputs["probabilities"][:, 0], **column)
    ranking = {"logits": outputs["logits"][:, 0], "labels": outputs["labels"][:, 0]}
    generator.manual_seed(100 + batch_index)  # the same draws for a batch wherever it is processed
    for name, metric in metrics.items():
        if name in ("pos_ranks", "reciprocal_rank", "hit_at_3", "sampled_auc"):
            metric.update(ranking)
        elif name not in ("stable_mean", "auroc_mwu", "rce", "nrce"):
            metric.update(outputs)


def compute_all(metrics: dict) -> dict:
    values = {}
    for name, metric in metrics.items():
        result = metric.compute()
        if isinstance(result, dict):
            values.update({f"{name}:{key}": value.item() for key, value in result.items()})
        else:
            values[name] = result.item()
    return values


def build_exact_metrics() -> dict:
    """Metrics with list states, for the rank that never updates."""
    from tml.core import metrics as m

    return {"auroc_mwu": m.AUROCWithMWU(), "nrce": m.NRCE(), "collection": m.get_multi_task_metrics(TASKS)}


def update_exact(metrics: dict, outputs: dict) -> None:
    column = {"target": outputs["labels"][:, 0], "weight": outputs["weights"][:, 0]}
    metrics["auroc_mwu"].update(outputs["scores"][:, 0], **column)
    metrics["nrce"].update(outputs["probabilities"][:, 0], **column)
    metrics["collection"].update(outputs)


def metrics_rank(rank: int, world_size: int) -> tuple:
    """Rank r processes batch r. Also: metrics updated on rank 0 only (rank 1 holds empty lists)."""
    outputs = make_outputs()
    metrics, generator = build_metrics()
    update_all(metrics, generator, batch(outputs, rank), batch_index=rank)
    exact = build_exact_metrics()
    if rank == 0:
        update_exact(exact, batch(outputs, 0))
    return compute_all(metrics), compute_all(exact)
