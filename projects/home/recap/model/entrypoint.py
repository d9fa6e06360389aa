"""The Heavy Ranker: a multi-task ranking model with one tower (head) per engagement task.

Input row, concatenated in this order on dim 1:
  featurized dense features | large embeddings | small embeddings | LN(user_embedding) |
  LN(user_eng_embedding) | LN(author_embedding) | position embedding
The backbone (share_all / share_partial) reads that row; towers read the row (share_none), the
backbone output (share_all) or both concatenated (share_partial). Each tower yields one logit, which
an optional affine map rescales; probabilities are its sigmoid, and calibrated probabilities undo the
data's down-sampling (`NumericCalibration`) when `downsampling_correction` is `calibration`; with
`loss_weights` the loss undoes it instead and calibration is the identity.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.modules.embedding import LargeEmbeddings
from tml.common.tracing import is_tracing
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.model.config import DownsamplingCorrection, ModelConfig, MultiTaskType, TaskModel
from tml.projects.home.recap.model.dcn import Dcn
from tml.projects.home.recap.model.dlrm import DENSE, EMBEDDING, Dlrm, FeatureSegment
from tml.projects.home.recap.model.feature_transform import build_features_preprocessor, feature_shape
from tml.projects.home.recap.model.mask_net import MaskNet
from tml.projects.home.recap.model.mlp import Mlp
from tml.projects.home.recap.model.numeric_calibration import NumericCalibration
from tml.projects.home.recap.model.position_debias import PositionDebias
from tml.projects.home.recap.model.small_embeddings import SmallEmbeddings

InputShapes = Mapping[str, Sequence[int]]

# Pretrained TwHIN embeddings that are model inputs whenever the data provides them.
TWHIN_EMBEDDINGS = ("user_embedding", "user_eng_embedding", "author_embedding")


def sanitize(name: str) -> str:
    """Task names contain dots, which module names may not."""
    return name.replace(".", "__")


def unsanitize(name: str) -> str:
    return name.replace("__", ".")


def build_single_task_model(
    task: TaskModel, input_dims: int, feature_layout: Optional[Sequence[FeatureSegment]] = None
) -> nn.Module:
    """The network a TaskModel selects; `feature_layout` describes the input for DLRM."""
    if task.mlp_config is not None:
        return Mlp(input_dims, task.mlp_config)
    if task.dcn_config is not None:
        return Dcn(task.dcn_config, input_dims)
    if task.mask_net_config is not None:
        return MaskNet(task.mask_net_config, input_dims)
    if task.dlrm_config is not None:
        return Dlrm(task.dlrm_config, input_dims, feature_layout)
    raise ValueError("TaskModel sets no architecture (mlp_config, dcn_config, dlrm_config, mask_net_config).")


def _affine_map(task: TaskModel) -> nn.Module:
    if task.affine_map is None:
        return nn.Identity()
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(task.affine_map.scale)
        layer.bias.fill_(task.affine_map.bias)
    return layer


def _width(input_shapes: InputShapes, name: str) -> int:
    shape = feature_shape(input_shapes, name)
    return int(shape[-1]) if shape is not None and len(shape) > 1 else 0


def _task_rates(task_name: str, data_config: Any) -> tuple[float, float]:
    """(pos, neg) down-sampling rates the data declares for a model task; (1, 1) without data config."""
    if data_config is None:
        return 1.0, 1.0
    tasks = data_config.tasks
    if task_name not in tasks:
        raise ValueError(
            f"model task '{task_name}' is not among the data's tasks {list(tasks)}; every model task "
            f"needs a label column of the same name."
        )
    rates = tasks[task_name]
    return rates.pos_downsampling_rate, rates.neg_downsampling_rate


class MultiTaskRankingModel(nn.Module):
    """See the module docstring. `input_shapes` maps feature names ("continuous", "binary", "discrete",
    "user_embedding", ...; or the batch field names "continuous_features", ...) to shapes whose last
    entry is the width (a dataset's `torch_element_spec`); `data_config` (a
    RecapDataConfig) gives each task's down-sampling rates (None: none).

    Depending on `config.downsampling_correction`, the rates either calibrate the probabilities or
    are left to the loss. In calibration mode `calibrated_sampling_rates` ([2, T]: pos rates, neg
    rates, in task order; None when all are 1 or in loss_weights mode) are the rates the calibration
    undoes, whose inverse-rate weights RecapModelAndLoss removes from the loss.
    `embedding_device` is where the large-embedding tables are allocated ("meta" to shard them later).
    """

    def __init__(
        self,
        input_shapes: InputShapes,
        config: ModelConfig,
        data_config: Any = None,
        return_backbone: bool = False,
        embedding_device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.return_backbone = return_backbone
        self.task_names = list(config.tasks)

        self.preprocessor = build_features_preprocessor(config.featurization_config, input_shapes)
        layout = [FeatureSegment("features", self.preprocessor.out_features, DENSE)]

        self.large_embeddings: Optional[LargeEmbeddings] = None
        if config.large_embeddings is not None:
            # Unlike LargeEmbeddings' own default (meta), no device here means a plain CPU module.
            self.large_embeddings = LargeEmbeddings(config.large_embeddings, device=embedding_device or "cpu")
            layout += [
                FeatureSegment(t.name, t.embedding_dim, EMBEDDING) for t in config.large_embeddings.tables
            ]

        self.small_embeddings: Optional[SmallEmbeddings] = None
        if config.small_embeddings is not None:
            self.small_embeddings = SmallEmbeddings(config.small_embeddings)
            layout += [
                FeatureSegment(t.name, t.embedding_dim, EMBEDDING) for t in config.small_embeddings.tables
            ]

        self.embedding_layer_norms = nn.ModuleDict()
        for name in TWHIN_EMBEDDINGS:
            width = _width(input_shapes, name)
            if width > 0:
                self.embedding_layer_norms[name] = nn.LayerNorm(width)
                layout.append(FeatureSegment(name, width, EMBEDDING))

        self.position_debias: Optional[PositionDebias] = None
        if config.position_debias_config is not None:
            self.position_debias = PositionDebias(config.position_debias_config)
            layout.append(FeatureSegment("position", self.position_debias.out_features, EMBEDDING))

        self.feature_layout = layout
        self.input_dims = sum(segment.width for segment in layout)
        if self.input_dims == 0:
            raise ValueError(
                f"the model has no input features: the data provides {sorted(input_shapes)}; map the "
                f"feature columns to continuous / binary / discrete in seg_dense_schema.renamed_features, "
                f"or configure embeddings."
            )

        self.backbone: Optional[nn.Module] = None
        tower_layout = layout
        if config.multi_task_type != MultiTaskType.SHARE_NONE:
            self.backbone = build_single_task_model(config.backbone, self.input_dims, layout)
            backbone_segment = FeatureSegment("backbone", self.backbone.out_features, DENSE)
            tower_layout = [backbone_segment]
            if config.multi_task_type == MultiTaskType.SHARE_PARTIAL:
                tower_layout = layout + [backbone_segment]
        tower_dims = sum(segment.width for segment in tower_layout)

        self.towers = nn.ModuleDict()
        self.affine_maps = nn.ModuleDict()
        self.calibrators = nn.ModuleDict()
        calibrate = config.downsampling_correction == DownsamplingCorrection.CALIBRATION
        rates = {task_name: _task_rates(task_name, data_config) for task_name in config.tasks}
        for task_name, task in config.tasks.items():
            key = sanitize(task_name)
            tower = build_single_task_model(task, tower_dims, tower_layout)
            if tower.out_features != 1:
                raise ValueError(
                    f"the tower of task '{task_name}' outputs {tower.out_features} values; a tower must "
                    f"end in a single logit (e.g. mlp_config.layer_sizes ending in 1)."
                )
            self.towers[key] = tower
            self.affine_maps[key] = _affine_map(task)
            self.calibrators[key] = NumericCalibration(*(rates[task_name] if calibrate else (1.0, 1.0)))
        # Calibration mode: the training sample is learnt as it is, so the loss must not also carry
        # the rates' weights (which the data pipeline puts in `weights`, for the metrics).
        any_rate = any(rate != (1.0, 1.0) for rate in rates.values())
        self.register_buffer(
            "calibrated_sampling_rates",
            torch.tensor([list(pair) for pair in rates.values()]).T.contiguous() if calibrate and any_rate else None,
            persistent=False,
        )

    def forward(
        self,
        continuous_features: torch.Tensor,
        binary_features: Optional[torch.Tensor] = None,
        discrete_features: Optional[torch.Tensor] = None,
        sparse_features: Optional[KeyedJaggedTensor] = None,
        user_embedding: Optional[torch.Tensor] = None,
        user_eng_embedding: Optional[torch.Tensor] = None,
        author_embedding: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        weights: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """Labels and weights are accepted (batches pass all their fields) and ignored."""
        parts = [self.preprocessor(continuous_features, binary_features, discrete_features)]
        if self.large_embeddings is not None:
            if sparse_features is None:
                raise ValueError("the model has large embeddings but the batch has no sparse_features.")
            parts.append(self.large_embeddings.pooled_embeddings(sparse_features))
        if self.small_embeddings is not None:
            parts.append(
                self.small_embeddings(_required(discrete_features, "discrete_features", "small embeddings"))
            )
        twhin = {
            "user_embedding": user_embedding,
            "user_eng_embedding": user_eng_embedding,
            "author_embedding": author_embedding,
        }
        for name, layer_norm in self.embedding_layer_norms.items():
            parts.append(layer_norm(_required(twhin[name], name, "its LayerNorm input").float()))
        if self.position_debias is not None:
            parts.append(
                self.position_debias(_required(discrete_features, "discrete_features", "position debias"))
            )
        net = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

        outputs: dict[str, torch.Tensor] = {}
        if self.backbone is not None:
            backbone_output = self.backbone(net)["output"]
            if self.return_backbone:
                outputs["backbone"] = backbone_output
            if self.config.multi_task_type == MultiTaskType.SHARE_ALL:
                net = backbone_output
            else:
                net = torch.cat([net, backbone_output], dim=1)

        logits, probabilities, calibrated = [], [], []
        for key, tower in self.towers.items():
            logit = self.affine_maps[key](tower(net)["output"])
            probability = torch.sigmoid(logit)
            logits.append(logit)
            probabilities.append(probability)
            calibrated.append(self.calibrators[key](probability))
        outputs["logits"] = torch.cat(logits, dim=1)
        outputs["probabilities"] = torch.cat(probabilities, dim=1)
        outputs["calibrated_probabilities"] = torch.cat(calibrated, dim=1)
        return outputs


def _required(tensor: Optional[torch.Tensor], name: str, user: str) -> torch.Tensor:
    if is_tracing():
        return tensor
    # Batches hold an empty [0, 0] tensor for an embedding the data does not have.
    if tensor is None or tensor.dim() != 2 or tensor.shape[1] == 0:
        raise ValueError(f"the batch has no {name}, which the model's {user} need(s).")
    return tensor


def count_parameters(module: nn.Module) -> int:
    """Parameters of the module, counting meta (unallocated) tensors too."""
    return sum(parameter.numel() for parameter in module.parameters())


def create_ranking_model(
    data_spec: InputShapes,
    config: Any,
    device: torch.device,
    loss_fn: Optional[Callable[..., Any]] = None,
    data_config: Any = None,
    return_backbone: bool = False,
    embedding_device: Optional[torch.device] = None,
    label_names: Optional[Sequence[str]] = None,
) -> nn.Module:
    """The ranking model for a RecapConfig, dense parts on `device`, large tables on `embedding_device`
    (default `device`). With `loss_fn` it is wrapped in `RecapModelAndLoss`, whose labels/weights are
    matched to the model's tasks by `label_names` (the data's task order; default `data_config.tasks`).
    """
    data_config = data_config if data_config is not None else config.train_data
    model = MultiTaskRankingModel(
        input_shapes=data_spec,
        config=config.model,
        data_config=data_config,
        return_backbone=return_backbone,
        embedding_device=embedding_device if embedding_device is not None else device,
    )
    for name, child in model.named_children():
        if name != "large_embeddings":
            child.to(device)
    logging.debug("Ranking model:\n%s", model)  # the full module tree (TML_LOG_LEVEL=debug)
    parts = ", ".join(
        f"{name} {count_parameters(child):,}" for name, child in model.named_children() if count_parameters(child)
    )
    logging.info(f"Ranking model: {count_parameters(model):,} parameters ({parts}); input width {model.input_dims}")
    if loss_fn is None:
        return model

    from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss

    if label_names is None and data_config is not None:
        label_names = list(data_config.tasks)
    return RecapModelAndLoss(model, loss_fn, stratifiers=config.model.stratifiers, label_names=label_names)
