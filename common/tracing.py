"""Whether the model is being traced rather than run, so data-dependent checks must be skipped.

torchrec's train pipelines trace the forward with torch.fx (tensors are Proxies: a Python `if` on
their values fails), and serving export traces it with dynamo (value checks would be baked in or
rejected). The checks only guard eager runs against bad data.
"""

from __future__ import annotations

import torch
import torch.fx._symbolic_trace as fx_symbolic_trace


def is_fx_symbolic_tracing() -> bool:
    return bool(fx_symbolic_trace.is_fx_symbolic_tracing())


def is_tracing() -> bool:
    return (
        is_fx_symbolic_tracing()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_scripting()
        or torch.jit.is_tracing()
    )
