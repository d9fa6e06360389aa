import os

import pytest

# Tests run many small torch ops; one thread each keeps the 2-core CI machine responsive.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def process_group():
    """A world-size-1 gloo process group for the duration of one test."""
    from tml.common.testing_utils import single_process_group

    with single_process_group():
        yield


@pytest.fixture
def warnings_seen():
    """Messages the tml logger prints at WARNING (it does not propagate, so caplog cannot see them)."""
    import logging as std_logging

    from tml.ml_logging.torch_logging import logging as tml_logging

    seen = []
    handler = std_logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage()) if record.levelname == "WARNING" else None
    tml_logging.logger.addHandler(handler)
    tml_logging.reset_warning_repeats()
    yield seen
    tml_logging.logger.removeHandler(handler)
