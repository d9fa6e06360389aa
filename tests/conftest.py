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
