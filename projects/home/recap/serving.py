"""Export a trained Heavy Ranker for serving with `torch.export`, and load it back (the library
behind the `export` command, `python -m tml.projects.home.recap.export`).

The exported program takes one dict of tensors and returns one dict of [B, T] tensors:

    inputs   continuous_features [B, C] float, binary_features [B, Bn], discrete_features [B, D] int64,
             the TwHIN embeddings the model reads (user_embedding, ... [B, E] float), and, when the
             model has large embeddings, their ids as a KeyedJaggedTensor's two flat tensors:
             sparse_values [N] int64 and sparse_lengths [K * B] int64, key-major in the order of
             `sparse_keys` (the model's table names, saved with the program).
    outputs  logits, probabilities, calibrated_probabilities, columns in `task_names` order.

The batch size and the number of ids are dynamic. The program is traced for batches of at least
2 rows (torch.export specialises a size of 1); `ExportedRanker` pads a single-row batch. The file
holds the program and a JSON description (`tml_serving.json`) of inputs, sparse keys and tasks.
Serving code without tml can use `torch.export.load(path).module()(features)` directly.
"""
from __future__ import annotations

import contextlib
import json
import logging as std_logging
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.export import Dim
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.model.entrypoint import TWHIN_EMBEDDINGS, MultiTaskRankingModel

METADATA_FILE = "tml_serving.json"
FORMAT = "tml.recap.serving/1"
DENSE_INPUTS = ("continuous_features", "binary_features", "discrete_features")
SPARSE_INPUTS = ("sparse_values", "sparse_lengths")
OUTPUTS = ("logits", "probabilities", "calibrated_probabilities")
MIN_EXPORTED_BATCH = 2
MAX_BATCH = 1 << 24


class ServingModel(nn.Module):
    """The ranking model behind a flat tensor interface that torch.export can trace and serve."""

    def __init__(self, model: MultiTaskRankingModel) -> None:
        super().__init__()
        self.model = model
        self.sparse_keys: list[str] = (
            list(model.large_embeddings.feature_names) if model.large_embeddings is not None else []
        )
        embeddings = [name for name in TWHIN_EMBEDDINGS if name in model.embedding_layer_norms]
        self.input_names: list[str] = [*DENSE_INPUTS, *embeddings, *(SPARSE_INPUTS if self.sparse_keys else ())]
        self.task_names: list[str] = list(model.task_names)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sparse = None
        if self.sparse_keys:
            sparse = KeyedJaggedTensor(
                keys=self.sparse_keys, values=features["sparse_values"], lengths=features["sparse_lengths"]
            )
        embeddings = {name: features[name] for name in TWHIN_EMBEDDINGS if name in features}
        outputs = self.model(
            continuous_features=features["continuous_features"],
            binary_features=features["binary_features"],
            discrete_features=features["discrete_features"],
            sparse_features=sparse,
            **embeddings,
        )
        return {name: outputs[name] for name in OUTPUTS}


def _field(batch: Any, name: str) -> Any:
    return batch.get(name) if isinstance(batch, Mapping) else getattr(batch, name, None)


def serving_inputs(batch: Any, input_names: Sequence[str], sparse_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The exported program's input dict from a RecapBatch (or a dict of its fields)."""
    features: dict[str, torch.Tensor] = {}
    for name in input_names:
        if name in SPARSE_INPUTS:
            continue
        value = _field(batch, name)
        if value is None or (value.dim() == 2 and value.shape[1] == 0 and name in TWHIN_EMBEDDINGS):
            raise ValueError(f"the batch has no '{name}', which the exported model needs (inputs: {list(input_names)})")
        features[name] = value
    if sparse_keys:
        sparse = _field(batch, "sparse_features")
        if not isinstance(sparse, KeyedJaggedTensor):
            raise ValueError(f"the exported model reads sparse ids {list(sparse_keys)}; the batch has no sparse_features")
        missing = [key for key in sparse_keys if key not in sparse.keys()]
        if missing:
            raise ValueError(f"sparse_features lacks key(s) {missing}; it has {sparse.keys()}")
        if list(sparse.keys()) != list(sparse_keys):
            sparse = sparse.permute([sparse.keys().index(key) for key in sparse_keys])
        features["sparse_values"] = sparse.values().to(torch.int64)
        features["sparse_lengths"] = sparse.lengths().to(torch.int64)
    return features


def _dynamic_shapes(features: Mapping[str, torch.Tensor], num_sparse_keys: int) -> dict[str, Any]:
    batch = Dim("batch", min=MIN_EXPORTED_BATCH, max=MAX_BATCH)
    shapes: dict[str, Any] = {}
    for name, value in features.items():
        if name == "sparse_values":
            shapes[name] = {0: Dim("num_ids", min=0, max=1 << 40)}
        elif name == "sparse_lengths":
            shapes[name] = {0: num_sparse_keys * batch}
        else:
            shapes[name] = {0: batch}
    return {"features": shapes}


def _example_batch_of_two(features: Mapping[str, torch.Tensor], num_sparse_keys: int) -> dict[str, torch.Tensor]:
    """Export traces with a batch size above 1; a 1-row example is padded (see `pad_single_row`)."""
    rows = features["continuous_features"].shape[0]
    return pad_single_row(dict(features), num_sparse_keys) if rows == 1 else dict(features)


class _DropTracingNotice(std_logging.Filter):
    """torchrec warns that tracing KeyedJaggedTensor.to_dict non-strictly is slow: it is, once, at
    export; the exported program itself runs plain tensor ops."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "non-strict torch.export KJT to_dict" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tracing_notice():
    notice_filter = _DropTracingNotice()
    root = std_logging.getLogger()
    root.addFilter(notice_filter)
    try:
        yield
    finally:
        root.removeFilter(notice_filter)


def export_model(model: MultiTaskRankingModel, example_batch: Any) -> torch.export.ExportedProgram:
    """Trace `model` (put in eval mode) on an example RecapBatch with dynamic batch size and id count."""
    model.eval()
    serving = ServingModel(model).eval()
    features = serving_inputs(example_batch, serving.input_names, serving.sparse_keys)
    features = _example_batch_of_two(features, len(serving.sparse_keys))
    with torch.no_grad(), _quiet_tracing_notice():
        return torch.export.export(
            serving,
            (features,),
            dynamic_shapes=_dynamic_shapes(features, len(serving.sparse_keys)),
            strict=False,  # KeyedJaggedTensor is a Python object that only non-strict tracing follows
        )


def save_exported(program: torch.export.ExportedProgram, model: MultiTaskRankingModel, path: str) -> None:
    serving = ServingModel(model)
    description = {
        "format": FORMAT,
        "input_names": serving.input_names,
        "sparse_keys": serving.sparse_keys,
        "task_names": serving.task_names,
        "outputs": list(OUTPUTS),
        "min_exported_batch": MIN_EXPORTED_BATCH,
    }
    torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(description)})


def export_to_file(model: MultiTaskRankingModel, example_batch: Any, path: str) -> torch.export.ExportedProgram:
    program = export_model(model, example_batch)
    save_exported(program, model, path)
    logging.info(f"exported the ranking model to {path}")
    return program


def pad_single_row(features: dict[str, torch.Tensor], num_sparse_keys: int) -> dict[str, torch.Tensor]:
    """Append an all-zero row (no ids) to a 1-row input; outputs are per row, so row 0 is unchanged."""
    padded = {}
    for name, value in features.items():
        if name == "sparse_values":
            padded[name] = value
        elif name == "sparse_lengths":
            per_key = value.reshape(num_sparse_keys, 1)
            padded[name] = torch.cat([per_key, torch.zeros_like(per_key)], dim=1).reshape(-1)
        else:
            padded[name] = torch.cat([value, torch.zeros_like(value)], dim=0)
    return padded


class ExportedRanker:
    """An exported Heavy Ranker loaded from its file: `ranker(batch) -> {output: [B, T]}`."""

    def __init__(self, path: str) -> None:
        from tml.common.quiet_warnings import quiet_torchrec_warnings

        quiet_torchrec_warnings()  # torch.fx's is_fx_tracing notice, printed on the first call otherwise
        extra_files = {METADATA_FILE: ""}
        self.program = torch.export.load(path, extra_files=extra_files)
        if not extra_files[METADATA_FILE]:
            raise ValueError(f"{path} is an exported program without {METADATA_FILE}; it was not written by tml's export")
        description = json.loads(extra_files[METADATA_FILE])
        if description.get("format") != FORMAT:
            raise ValueError(f"{path} has serving format {description.get('format')!r}; this loader reads {FORMAT!r}")
        self.input_names: list[str] = description["input_names"]
        self.sparse_keys: list[str] = description["sparse_keys"]
        self.task_names: list[str] = description["task_names"]
        self.module = self.program.module()

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        """`batch`: a RecapBatch, or a dict of its fields (with a `sparse_features` KJT when needed)."""
        return self.run(serving_inputs(batch, self.input_names, self.sparse_keys))

    @torch.no_grad()
    def run(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run on the program's own input dict (see the module docstring)."""
        rows = features["continuous_features"].shape[0]
        if rows == 0:
            return {name: torch.zeros(0, len(self.task_names)) for name in OUTPUTS}
        if rows == 1:
            outputs = self.module(pad_single_row(features, len(self.sparse_keys)))
            return {name: value[:1] for name, value in outputs.items()}
        return self.module(features)
