"""A small MNIST digit classifier that scores EBM samples (paper §6's "which digit is this?").

Architecture: conv3×3(1→32) → ReLU → maxpool 2 → conv3×3(32→64) → ReLU → maxpool 2 →
linear(3136→128) → ReLU (the *feature* layer used by the Fréchet distance) → linear(128→10).
It is trained once on the training split of the data a run used (small random shifts as
augmentation), kept on disk as a checkpoint and reloaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ebmref.files import atomic_torch_save
from ebmref.validation import check_int_range, check_positive
from mnist.data import MNISTData


class DigitClassifier(nn.Module):
    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.features(x))


def _random_shift(x: Tensor, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Shift each image by up to ±max_shift pixels (zero fill): cheap augmentation."""
    pad = F.pad(x, (max_shift,) * 4)
    h, w = x.shape[-2:]
    off = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator)
    return pad[:, :, off[0]:off[0] + h, off[1]:off[1] + w]


@torch.no_grad()
def accuracy(model: DigitClassifier, data: MNISTData, batch: int = 1000) -> float:
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, len(data), batch):
        logits = model(data.images[i:i + batch].to(dev))
        correct += int((logits.argmax(1).cpu() == data.labels[i:i + batch]).sum())
    return correct / max(len(data), 1)


def train_classifier(train: MNISTData, epochs: int = 4, batch: int = 128, lr: float = 1e-3,
                     seed: int = 0, device: str = "cpu", max_images: int | None = None,
                     progress: bool = False) -> DigitClassifier:
    """Adam on cross-entropy; ``max_images`` truncates the training split (tiny runs);
    ``progress``: a bar over the epochs on stderr."""
    check_int_range(epochs, "epochs", 1)
    check_int_range(batch, "batch", 1)
    check_positive(lr, "lr")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # layer initialisation
    model = DigitClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = train.images, train.labels
    if max_images is not None:
        x, y = x[:max_images], y[:max_images]
    n = x.shape[0]
    for _ in tqdm(range(epochs), desc="classifier", unit="epoch", disable=not progress):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            xb = _random_shift(x[idx], g).to(device)
            loss = F.cross_entropy(model(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _tag(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", source).strip("_")[:80]


def default_classifier_path(train: MNISTData, cache_dir: str | Path = "runs/mnist_classifier"
                            ) -> Path:
    return Path(cache_dir) / f"classifier_{_tag(train.source)}.pt"


def load_or_train_classifier(train: MNISTData, heldout: MNISTData | None = None,
                             path: str | Path | None = None, epochs: int = 4,
                             device: str = "cpu", max_images: int | None = None,
                             verbose: bool = True) -> tuple[DigitClassifier, dict]:
    """Load the classifier checkpoint at ``path`` if it was trained on the same data with the
    same settings; otherwise train it and save it atomically. Returns (model, meta) where meta
    holds the data source, epochs and held-out accuracy."""
    path = Path(path) if path is not None else default_classifier_path(train)
    want = {"source": train.source, "epochs": int(epochs),
            "max_images": -1 if max_images is None else int(max_images)}
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt.get("meta", {})
        if all(meta.get(k) == v for k, v in want.items()):
            model = DigitClassifier()
            model.load_state_dict(ckpt["state_dict"])
            return model.to(device).eval(), meta
    model = train_classifier(train, epochs=epochs, device=device, max_images=max_images,
                             progress=verbose)
    meta = dict(want)
    meta["heldout_accuracy"] = accuracy(model, heldout) if heldout is not None else None
    meta["heldout_source"] = heldout.source if heldout is not None else ""
    if verbose:
        acc = meta["heldout_accuracy"]
        print(f"classifier trained on {train.source}: held-out accuracy "
              f"{'n/a' if acc is None else f'{acc:.4f}'} -> {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                       "meta": meta}, path)
    return model, meta
