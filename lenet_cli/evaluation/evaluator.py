"""Scoring a network on a test split: every prediction kept, then the numbers and pictures of it.

`Evaluator` runs inside a Lightning Trainer (so accelerator and precision come from the trainer
config) and keeps each image's logits-argmax, probabilities and label; `Evaluation` turns them
into accuracy, loss, per-class precision/recall, the confusion matrix and the worst mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F


class Evaluator(pl.LightningModule):
    """Test-only LightningModule around a network: collects what each test image produced."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.net = network
        self.predictions: list[torch.Tensor] = []
        self.probabilities: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.loss_sum = 0.0

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x).float()
        # Summed here and divided once at the end: the exact mean, whatever the batch sizes.
        self.loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        self.predictions.append(logits.argmax(1).cpu())
        self.probabilities.append(logits.softmax(1).cpu())
        self.labels.append(y.cpu())

    def result(self) -> Evaluation:
        labels = torch.cat(self.labels).numpy() if self.labels else np.zeros(0, dtype=np.int64)
        return Evaluation(
            labels=labels,
            predictions=torch.cat(self.predictions).numpy() if self.predictions else labels.copy(),
            probabilities=torch.cat(self.probabilities).numpy() if self.probabilities else None,
            loss=self.loss_sum / max(len(labels), 1),
        )


@dataclass
class Evaluation:
    """Per-image results on a test split, in the split's order."""

    labels: np.ndarray  # (N,) true classes
    predictions: np.ndarray  # (N,) predicted classes (argmax of the logits)
    probabilities: np.ndarray | None  # (N, classes) softmax
    loss: float  # mean cross-entropy

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.labels).mean()) if len(self.labels) else 0.0

    def confusion_matrix(self, num_classes: int) -> np.ndarray:
        """matrix[true, predicted] = number of test images."""
        matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix

    def per_class(self, num_classes: int) -> list[dict[str, Any]]:
        """Per class: precision, recall (= its accuracy), support, most frequent confusion."""
        matrix = self.confusion_matrix(num_classes)
        rows = []
        for c in range(num_classes):
            support, predicted, right = (
                int(matrix[c].sum()),
                int(matrix[:, c].sum()),
                int(matrix[c, c]),
            )
            wrong = matrix[c].copy()
            wrong[c] = 0
            rows.append(
                {
                    "class": c,
                    "precision": right / predicted if predicted else float("nan"),
                    "recall": right / support if support else float("nan"),
                    "support": support,
                    "confused_with": int(wrong.argmax()) if wrong.any() else None,
                    "confused_count": int(wrong.max()),
                }
            )
        return rows

    def confidence(self, indices: np.ndarray) -> np.ndarray:
        """The probability the network gave to its own answer, for the given images."""
        if self.probabilities is None:
            return np.full(len(indices), np.nan)
        return self.probabilities[indices, self.predictions[indices]]

    def worst_mistakes(self, count: int) -> np.ndarray:
        """Indices of the wrong answers given with the highest confidence, worst first."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        if self.probabilities is None or not len(wrong):
            return wrong[:count]
        return wrong[np.argsort(-self.confidence(wrong), kind="stable")][:count]

    def metrics(self, num_classes: int) -> dict[str, float]:
        """Flat metrics for metrics.json; test/acc_class_<k> is named as in lenet-train's."""
        metrics = {
            "test/acc": self.accuracy,
            "test/loss": self.loss,
            "test/samples": len(self.labels),
        }
        for row in self.per_class(num_classes):
            if row["support"]:
                metrics[f"test/acc_class_{row['class']}"] = row["recall"]
            if not np.isnan(row["precision"]):
                metrics[f"test/precision_class_{row['class']}"] = row["precision"]
        return metrics
