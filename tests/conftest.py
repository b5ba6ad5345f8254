import os

import pytest
import torch
from PIL import Image

torch.manual_seed(0)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in one process per core (pytest-xdist, see pyproject.toml): one intra-op thread each, so that
    # the workers do not fight over the cores.
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One intra-op thread: small models run faster on one thread than on two shared with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)




def write_folder(root):
    """A tiny image-folder data set (train/ and test/, classes dark and light) of 32x32 PNGs."""
    for c, cls in enumerate(["dark", "light"]):
        for split, n in (("train", 16), ("test", 4)):
            for i in range(n):
                path = root / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (32, 32), (c * 200 + i, c * 200, 40)).save(path)
    return root
