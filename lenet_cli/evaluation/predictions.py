"""Predicting the digit on photos: which files to read, the network's probabilities for each,
and the preprocessed 28x28 images when asked for (what lenet-predict shows and saves)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BATCH = 256


@dataclass
class Prediction:
    path: str
    probabilities: list[float]

    @property
    def label(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def confidence(self) -> float:
        return float(max(self.probabilities))

    def top(self, k: int) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(c), float(self.probabilities[c])) for c in order]

    def as_json(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "probabilities": [round(p, 6) for p in self.probabilities],
        }


def collect_files(inputs: list[str]) -> list[Path]:
    """The files named, and the files (not hidden, not in subfolders) of the folders named."""
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            )
        else:
            files.append(path)  # a missing file is reported with the unreadable ones
    return files


def predict(network, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes) for 28x28 images in [0, 1]."""
    import torch

    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            x = torch.from_numpy(images[start : start + BATCH]).unsqueeze(1)
            chunks.append(network(x).float().softmax(1).numpy())
    return np.concatenate(chunks)


def save_all(folder: Path, files: list[Path], images: np.ndarray) -> None:
    from lenet_cli.preprocess import save_preprocessed

    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for file, image in zip(files, images, strict=True):
        name, n = f"{file.stem}.png", 1
        while name in used:  # same stem in two folders, or a.png and a.jpg
            n += 1
            name = f"{file.stem}-{n}.png"
        used.add(name)
        save_preprocessed(image, folder / name)
