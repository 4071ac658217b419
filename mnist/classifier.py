"""A small digit classifier that scores EBM samples (paper §6's "which digit is this?"), for
square images of any size S divisible by 4 (MNIST 28×28, the 8×8 digits of ``digits/``).

Architecture: conv3×3(1→32) → ReLU → maxpool 2 → conv3×3(32→64) → ReLU → maxpool 2 →
linear(64·(S/4)²→128) → ReLU (the *feature* layer used by the Fréchet distance) →
linear(128→10). It is trained once on the training split of the data a run used (random shifts
of up to ``max_shift`` pixels, and optionally Gaussian pixel noise of sd ``noise_std``, as
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
from ebmref.validation import check_int_range, check_nonnegative, check_positive


class DigitClassifier(nn.Module):
    feature_dim = 128

    def __init__(self, image_size: int = 28):
        super().__init__()
        check_int_range(image_size, "image_size", 4)
        if image_size % 4:
            raise ValueError(f"image_size: must be divisible by 4, got {image_size}")
        self.image_size = image_size
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * (image_size // 4) ** 2, self.feature_dim)
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
def accuracy(model: DigitClassifier, data, batch: int = 1000) -> float:
    """Share of ``data.images`` classified as ``data.labels`` (any data with both)."""
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    n = int(data.images.shape[0])
    for i in range(0, n, batch):
        logits = model(data.images[i:i + batch].to(dev))
        correct += int((logits.argmax(1).cpu() == data.labels[i:i + batch]).sum())
    return correct / max(n, 1)


def train_classifier(train, epochs: int = 4, batch: int = 128, lr: float = 1e-3,
                     seed: int = 0, device: str = "cpu", max_images: int | None = None,
                     max_shift: int = 2, noise_std: float = 0.0,
                     progress: bool = False) -> DigitClassifier:
    """Adam on cross-entropy on ``train.images`` (N, 1, S, S) and ``train.labels``;
    ``max_images`` truncates the training split (tiny runs); every batch is shifted by up to
    ``max_shift`` pixels and gets N(0, ``noise_std``²) pixel noise; ``progress``: a bar over
    the epochs on stderr."""
    check_int_range(epochs, "epochs", 1)
    check_int_range(batch, "batch", 1)
    check_positive(lr, "lr")
    check_int_range(max_shift, "max_shift", 0)
    check_nonnegative(noise_std, "noise_std")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # layer initialisation
    model = DigitClassifier(int(train.images.shape[-1])).to(device)
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
            xb = _random_shift(x[idx], g, max_shift) if max_shift else x[idx]
            if noise_std:
                xb = xb + noise_std * torch.randn(xb.shape, generator=g)
            xb = xb.to(device)
            loss = F.cross_entropy(model(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _tag(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", source).strip("_")[:80]


def default_classifier_path(train, cache_dir: str | Path = "runs/mnist_classifier") -> Path:
    return Path(cache_dir) / f"classifier_{_tag(train.source)}.pt"


def load_or_train_classifier(train, heldout=None, path: str | Path | None = None,
                             epochs: int = 4, device: str = "cpu", max_images: int | None = None,
                             verbose: bool = True, max_shift: int = 2, noise_std: float = 0.0
                             ) -> tuple[DigitClassifier, dict]:
    """Load the classifier checkpoint at ``path`` if it was trained on the same data with the
    same settings; otherwise train it and save it atomically. ``train``/``heldout``: any data
    with ``images`` (N, 1, S, S), ``labels`` and ``source`` (``mnist.data.MNISTData``,
    ``digits.data.DigitsData``). Returns (model, meta) where meta holds the data source, the
    settings and the held-out accuracy."""
    path = Path(path) if path is not None else default_classifier_path(train)
    want = {"source": train.source, "epochs": int(epochs),
            "max_images": -1 if max_images is None else int(max_images)}
    if max_shift != 2 or noise_std:  # the settings of earlier versions keep their meta
        want.update(max_shift=int(max_shift), noise_std=float(noise_std))
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt.get("meta", {})
        if all(meta.get(k) == v for k, v in want.items()):
            model = DigitClassifier(int(train.images.shape[-1]))
            model.load_state_dict(ckpt["state_dict"])
            return model.to(device).eval(), meta
    model = train_classifier(train, epochs=epochs, device=device, max_images=max_images,
                             max_shift=max_shift, noise_std=noise_std, progress=verbose)
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
