"""Warnings that torch, torchrec and DCP print on every run but that need no action.

Kept free of heavy imports, so every command can install the filters before it imports torch.
"""
from __future__ import annotations

import logging as std_logging
import warnings


def quiet_torchrec_warnings() -> None:
    """Silence warnings that torchrec and DCP print on every run but that need no action.

    - DMP's DDP wrapper warns about `broadcast_buffers` (FutureWarning);
    - DCP's save/load warn that ShardedTensor is being deprecated (torchrec still produces it);
    - torchrec's `apply_optimizer_in_backward` is marked deprecated in favour of the same
      function in torch (which is what it calls);
    - torch.fx logs "is_fx_tracing will return true..." while torchrec traces models;
    - autograd warns at every backward through a data-parallel table that FBGEMM's dense lookup op
      has no Autograd-key registration: its backward runs all the same (only torch.compile could go
      wrong; a registration fix is upstream in FBGEMM, PR 5886).
    """
    warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*deprecating ShardedTensor.*", category=FutureWarning)
    warnings.filterwarnings(
        "ignore", message=".*Please use Pytorch Distributed's _apply_optimizer_in_backward.*",
        category=DeprecationWarning,
    )
    warnings.filterwarnings(
        "ignore", message=".*dense_embedding_codegen_lookup_function: an autograd kernel was not registered.*",
        category=UserWarning,
    )
    std_logging.getLogger("torch.fx._symbolic_trace").setLevel(std_logging.ERROR)
    # Sharded tables on several ranks: torchrec's output dist still calls the renamed collectives.
    for collective in ("reduce_scatter_tensor", "all_gather_into_tensor"):
        warnings.filterwarnings("ignore", message=f".*{collective}` is deprecated.*", category=FutureWarning)
