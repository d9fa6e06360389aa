"""A training job for the kill-and-resume test: `python loop_job.py SAVE_DIR OUT STEPS SECONDS_PER_BATCH`.

Trains the TinyRanker on the deterministic stream and writes every parameter (gathered to plain
tensors) and the outputs on a fixed batch to OUT when done.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from loop_model import StreamDataset, build_trainable, make_batch  # noqa: E402
from tml.common.device import setup_and_get_device, teardown  # noqa: E402
from tml.core.custom_training_loop import train  # noqa: E402


def plain_tensors(state_dict):
    tensors = {}
    for name, value in state_dict.items():
        if hasattr(value, "local_shards"):
            value = torch.cat([shard.tensor for shard in value.local_shards()])
        tensors[name] = value.detach().clone()
    return tensors


def main() -> None:
    save_dir, out, steps, seconds_per_batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    device = setup_and_get_device()
    model, optimizer = build_trainable(device)
    train(model, optimizer, device, save_dir, logging_interval=5, train_steps=steps, checkpoint_frequency=5,
          dataset=StreamDataset(batch_size=32, seconds_per_batch=seconds_per_batch), worker_batch_size=32)
    model.eval()
    with torch.no_grad():
        probabilities = model(make_batch(99_999, 64))[1]["probabilities"]
    torch.save({"params": plain_tensors(model.state_dict()), "probabilities": probabilities}, out)
    del model, optimizer  # the process group is freed with them (see teardown)
    teardown()


if __name__ == "__main__":
    main()
