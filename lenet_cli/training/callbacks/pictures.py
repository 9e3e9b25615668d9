"""TensorBoard pictures of what the network learned (switch off with `logger.images=false`); each
tag and when it is drawn: docs/insight.md. Cost: a few percent of a run (numpy grids, figures
drawn once)."""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import grad_norm, rank_zero_warn
from torch import nn

from lenet_cli.evaluation import figures
from lenet_cli.evaluation.probe import probe_counts
from lenet_cli.models.layers import PartialConv2d


class PicturesCallback(pl.Callback):
    """Draws into the run's TensorBoardLogger; does nothing when there is none or enabled=false."""

    def __init__(
        self,
        enabled: bool = True,
        digits: int = 8,
        mistakes: int = 16,
        probe_samples: int = 500,
        max_shift: int = 4,
        graph: bool = True,
    ) -> None:
        super().__init__()
        self.enabled, self.digits, self.mistakes = enabled, digits, mistakes
        self.probe_samples, self.max_shift, self.graph = probe_samples, max_shift, graph
        self.active = False
        self._writer: Any = None
        self._digits: torch.Tensor | None = None
        self._grad_norms: dict[str, list[torch.Tensor]] = {}  # this epoch's samples, by tag
        self._probe: list[float] = []  # accuracy at each shift, from the test

    @staticmethod
    def _test_images(trainer: pl.Trainer, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """These test images as the network sees them (on its device, its dtype), and labels."""
        images, labels = trainer.datamodule.splits["test"]
        device, rows = trainer.lightning_module.device, rows.to(images.device)
        x = trainer.precision_plugin.convert_input(images[rows].to(device).float() / 255)
        return x, labels[rows].to(device)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Decided identically on every rank: the test-time sums below need every rank to take part.
        tensorboards = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        self.active = self.enabled and bool(tensorboards)
        if self.active:
            self._writer = tensorboards[0].experiment  # a SummaryWriter
            pl_module.mistakes_kept = self.mistakes  # the module's test keeps those drawn here

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.active and trainer.is_global_zero):
            return
        # `digits` test images of different classes (the same in every epoch and every run).
        labels = trainer.datamodule.splits["test"][1].tolist()
        firsts = sorted({label: i for i, label in reversed(list(enumerate(labels)))}.values())
        chosen = (firsts + [i for i in range(len(labels)) if i not in firsts])[: self.digits]
        self._digits = self._test_images(trainer, torch.tensor(chosen))[0]
        if self.graph:
            try:
                with warnings.catch_warnings():  # torch.jit.trace's deprecation notice, every run
                    warnings.simplefilter("ignore")
                    self._writer.add_graph(pl_module.net, self._digits)
            except Exception as error:  # tracing is best effort; a picture must never stop a run
                rank_zero_warn(f"TensorBoard model graph skipped: {error}")
        self._draw_epoch(trainer, pl_module.net)  # step 0: the random initial filters

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer
    ) -> None:
        # Sampled at the logging cadence, which the epoch mean needs: grad_norm reads each
        # parameter's norm back to the host (for its total), a wait for the device per parameter.
        sampled = trainer.global_step % trainer.log_every_n_steps == 0
        if self.active and trainer.is_global_zero and sampled:
            for tag, norm in grad_norm(pl_module.net, norm_type=2).items():
                self._grad_norms.setdefault(tag, []).append(norm)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.active and trainer.is_global_zero):
            return
        net, writer, step = pl_module.net, self._writer, trainer.global_step
        for name, param in net.named_parameters():
            try:
                writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            except ValueError:
                # Weights blown up by a huge learning rate fall outside TensorBoard's fixed bins
                # (about +-1e12): "The histogram is empty". The run goes on without it.
                continue
        for tag, norms in self._grad_norms.items():
            # Lightning's grad_2.0_norm/<parameter> and grad_2.0_norm_total, in one section.
            tag = tag.replace("grad_2.0_norm", "grad_norm").replace("norm_total", "norm/total")
            writer.add_scalar(tag, torch.stack(norms).float().mean().item(), step)
        self._grad_norms.clear()
        self._draw_epoch(trainer, net)

    @torch.no_grad()
    def _draw_epoch(self, trainer: pl.Trainer, net: nn.Module) -> None:
        writer, step, layers = self._writer, trainer.global_step, net.named_layers()
        # Each conv row names a block that starts with its convolution (models/lenet.py).
        convs = [(r.name, layers[r.name][0]) for r in net.trace if r.kind.startswith("conv")]
        # C1's kernels (one input channel in every data set), C3's summed over their input maps.
        for (name, conv), suffix in zip(convs[:2], ("", "_summed_over_inputs"), strict=False):
            weight = conv.full_weight() if isinstance(conv, PartialConv2d) else conv.weight
            image = figures.filters_image(weight.sum(1).float().cpu().numpy())
            writer.add_image(f"filters/{name}{suffix}", image, step, dataformats="HWC")
        if not convs:  # a fully connected first layer (the MLP): each unit's weights form an image
            name = net.trace[1].name  # F1, or the output layer when there is no hidden one
            first = next(m for m in layers[name].modules() if isinstance(m, nn.Linear))
            units = first.weight[:32].view(-1, *net.trace[0].shape[1:])
            image = figures.filters_image(units.float().cpu().numpy())
            writer.add_image(f"filters/{name}_first_32_units", image, step, dataformats="HWC")
        # The layers whose output is a stack of maps (convolutions, pooling) come right after the
        # input stage, in order: run alone, they give their outputs without forward hooks.
        names = [info.name for info in net.trace[1:] if len(info.shape) == 3]
        x, outputs, was_training = self._digits, {}, net.training
        net.eval()
        for name, layer in list(layers.items())[: len(names) + 1]:
            x = outputs[name] = layer(x)
        net.train(was_training)
        digits = self._digits[:, 0].float().cpu().numpy()
        for i, name in enumerate(names, start=1):
            image = figures.feature_maps_image(digits, outputs[name].float().cpu().numpy())
            writer.add_image(f"feature_maps/{i}_{name}", image, step, dataformats="HWC")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active:
            return
        # `probe_samples` digits spread evenly over the test set (MNIST's first test digits are
        # easier than its last ones), shared between the processes, whose counts add up.
        n = len(trainer.datamodule.splits["test"][1])
        rows = torch.arange(0, n, max(1, n // self.probe_samples))[: self.probe_samples]
        x, y = self._test_images(trainer, rows[trainer.global_rank :: trainer.world_size])
        counts = torch.stack(probe_counts(pl_module, x, y, self.max_shift))  # correct, total
        correct, total = trainer.strategy.reduce(counts, reduce_op="sum")
        probe = (correct.double() / total.clamp(min=1)).float()
        for s, accuracy in enumerate(probe):
            pl_module.log(f"probe/shift_acc_{s}px", accuracy)
        self._probe = probe.tolist()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks' on_test_epoch_end runs before the module's, where it scores the test.
        if not (self.active and trainer.is_global_zero and "confusion" in pl_module.test_outcome):
            return
        name = str(pl_module.hparams["model"].get("name", "this run"))
        images = figures.test_figures(pl_module.test_outcome)
        images["probe/translation"] = figures.probe_figure({name: self._probe})
        for tag, figure in images.items():
            image, step = figures.figure_to_array(figure), trainer.global_step
            self._writer.add_image(tag, image, step, dataformats="HWC")
