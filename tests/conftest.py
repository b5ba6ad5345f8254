import pytest
import torch
from PIL import Image
from torch import nn

torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread: small models run faster on one thread than on two shared with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics and affine terms, as after training, so that a wrong
    fold or export shows (fresh batch norms are identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)


def write_folder(root):
    """A tiny image-folder data set (train/ and test/, classes dark and light) of 32x32 PNGs."""
    for c, cls in enumerate(["dark", "light"]):
        for split, n in (("train", 16), ("test", 4)):
            for i in range(n):
                path = root / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (32, 32), (c * 200 + i, c * 200, 40)).save(path)
    return root
