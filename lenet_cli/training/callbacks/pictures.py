"""TensorBoard pictures of what the network learned (switch off with `logger.images=false`).

Every epoch (rank 0):   filters/C1 (first-layer kernels), filters/C3_summed_over_inputs,
                        feature_maps/<i>_<layer> for 8 fixed test digits, weights/* histograms,
                        grad_norm/<parameter> and grad_norm/total (Lightning's grad_norm, mean
                        over the epoch, sampled every log_every_n_steps)
Once:                   the model graph
After the test (rank 0 draws): confusion_matrix and mistakes/test from what LeNetModule's test
                        scored (its test_outcome), probe/translation (plot), and the scalars
                        probe/shift_acc_<s>px (all ranks add up their counts; in metrics.json)

Cost is kept to a few percent of a run: grids are numpy, figures are drawn once after the test,
and the probe uses `probe_samples` test digits spread over the test set.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import grad_norm, rank_zero_warn
from torch import nn

from lenet_cli.errors import ConfigError
from lenet_cli.evaluation import figures
from lenet_cli.evaluation.probe import probe_counts


def first_convs(net: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(layer name, weight (out, in, k, k)) of the network's convolutions, in order."""
    convs = []
    for name, layer in getattr(net, "named_layers", dict)().items():
        for module in layer.modules():
            weight = (
                module.full_weight()
                if hasattr(module, "full_weight")
                else getattr(module, "weight", None)
            )
            if isinstance(weight, torch.Tensor) and weight.dim() == 4:
                convs.append((name, weight.detach()))
                break
    return convs


def spatial_layers(net: nn.Module) -> list[str]:
    """Names of the layers whose output is a stack of maps (convolutions and pooling)."""
    return [info.name for info in getattr(net, "trace", [])[1:] if len(info.shape) == 3]


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
        if not isinstance(enabled, bool):
            raise ConfigError(
                f"logger.images={enabled!r} must be true or false.", fix="Use logger.images=false."
            )
        self.enabled, self.digits, self.mistakes = enabled, digits, mistakes
        self.probe_samples, self.max_shift, self.graph = probe_samples, max_shift, graph
        self.active = False
        self._writer: Any = None
        self._digits: torch.Tensor | None = None
        self._graph_done = False
        self._grad_norms: dict[str, list[torch.Tensor]] = {}  # this epoch's samples, by tag

    # ---- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _network(pl_module: pl.LightningModule) -> nn.Module:
        return getattr(pl_module, "net", pl_module)

    def _fixed_digits(self, trainer: pl.Trainer, device: torch.device) -> torch.Tensor | None:
        """`digits` test images of different classes (the same in every epoch and every run)."""
        try:
            images, labels = next(iter(trainer.datamodule.test_dataloader()))
        except Exception:  # no datamodule, or no test split: the other pictures still work
            return None
        first_of_class: dict[int, int] = {}
        for i, label in enumerate(labels.tolist()):
            first_of_class.setdefault(label, i)
        chosen = sorted(first_of_class.values())[: self.digits]
        chosen += [i for i in range(len(labels)) if i not in chosen][: self.digits - len(chosen)]
        x = images[chosen]
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        return trainer.precision_plugin.convert_input(x.to(device))  # the weights' dtype

    # ---- fit -----------------------------------------------------------------------------------

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
        net = self._network(pl_module)
        self._digits = self._fixed_digits(trainer, pl_module.device)
        if self.graph and not self._graph_done and self._digits is not None:
            self._graph_done = True
            try:
                with warnings.catch_warnings():  # torch.jit.trace's deprecation notice, every run
                    warnings.simplefilter("ignore")
                    self._writer.add_graph(net, self._digits)
            except Exception as error:  # tracing is best effort; a picture must never stop a run
                rank_zero_warn(f"TensorBoard model graph skipped: {error}")
        self._draw_epoch(trainer, net)  # step 0: the random initial filters

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer
    ) -> None:
        if not (self.active and trainer.is_global_zero):
            return
        if trainer.global_step % trainer.log_every_n_steps:
            return  # sampled at the logging cadence: the epoch mean needs no more
        # grad_norm reads each parameter's norm back to the host (for its total): a wait for
        # the device per parameter, at this cadence only.
        for tag, norm in grad_norm(self._network(pl_module), norm_type=2).items():
            self._grad_norms.setdefault(tag, []).append(norm)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.active and trainer.is_global_zero):
            return
        net, writer, step = self._network(pl_module), self._writer, trainer.global_step
        for name, param in net.named_parameters():
            try:
                writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            except ValueError:
                # Weights blown up by a huge learning rate fall outside TensorBoard's fixed bins
                # (about +-1e12) and it raises "The histogram is empty": the run goes on without
                # that histogram (the weight check of LeNetModule stops it if they overflow).
                continue
        for tag, norms in self._grad_norms.items():
            # Lightning's grad_2.0_norm/<parameter> and grad_2.0_norm_total, in one section.
            tag = tag.replace("grad_2.0_norm", "grad_norm").replace("norm_total", "norm/total")
            writer.add_scalar(tag, torch.stack(norms).float().mean().item(), step)
        self._grad_norms.clear()
        self._draw_epoch(trainer, net)

    @torch.no_grad()
    def _draw_epoch(self, trainer: pl.Trainer, net: nn.Module) -> None:
        writer, step = self._writer, trainer.global_step
        convs = first_convs(net)
        if convs:
            name, weight = convs[0]
            kernels = weight.flatten(0, 1) if weight.shape[1] <= 3 else weight.sum(1)
            image = figures.filters_image(kernels.float().cpu().numpy())
            writer.add_image(f"filters/{name}", image, step, dataformats="HWC")
        if len(convs) > 1:
            name, weight = convs[1]
            image = figures.filters_image(weight.sum(1).float().cpu().numpy())
            writer.add_image(f"filters/{name}_summed_over_inputs", image, step, dataformats="HWC")
        if not convs:  # a fully connected first layer: each unit's weights form an image too
            self._draw_dense_filters(writer, net, step)
        if self._digits is not None:
            self._draw_feature_maps(writer, net, step)

    def _draw_dense_filters(self, writer, net: nn.Module, step: int) -> None:
        trace = getattr(net, "trace", [])
        first = next((m for m in net.modules() if isinstance(m, nn.Linear)), None)
        if first is None or not trace or len(trace[0].shape) != 3:
            return
        c, h, w = trace[0].shape
        if c == 1 and first.in_features == h * w:
            units = first.weight[:32].detach().view(-1, h, w).float().cpu().numpy()
            name = next((k for k, v in net.named_layers().items() if first in v.modules()), "first")
            image = figures.filters_image(units)
            writer.add_image(f"filters/{name}_first_32_units", image, step, dataformats="HWC")

    def _draw_feature_maps(self, writer, net: nn.Module, step: int) -> None:
        names = spatial_layers(net)
        if not names:
            return
        layers, outputs = net.named_layers(), {}
        hooks = [
            layers[n].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o.detach()))
            for n in names
        ]
        was_training = net.training
        try:
            net.eval()
            net(self._digits)
        finally:
            net.train(was_training)
            for hook in hooks:
                hook.remove()
        digits = self._digits[:, 0].float().cpu().numpy()
        for i, name in enumerate(names, start=1):
            image = figures.feature_maps_image(digits, outputs[name].float().cpu().numpy())
            writer.add_image(f"feature_maps/{i}_{name}", image, step, dataformats="HWC")

    # ---- test ----------------------------------------------------------------------------------

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._probe_x: list[torch.Tensor] = []
        self._probe_y: list[torch.Tensor] = []
        self._probe_n, self._probe = 0, []

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        x, y = batch
        wanted = -(-self.probe_samples // trainer.world_size)  # this process's part
        if self.active and self._probe_n < wanted:
            # An equal, evenly spaced share of every batch: the probe sees the whole test set
            # (MNIST's first test digits are easier than its last ones).
            batches = trainer.num_test_batches[dataloader_idx]
            share = -(-wanted // batches) if math.isfinite(batches) else wanted
            take = min(share, wanted - self._probe_n)
            step = max(1, len(y) // max(share, 1))
            self._probe_x.append(x[::step][:take])
            self._probe_y.append(y[::step][:take])
            self._probe_n += len(self._probe_y[-1])

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active or not self._probe_y:
            return
        correct, total = probe_counts(
            pl_module, torch.cat(self._probe_x), torch.cat(self._probe_y), self.max_shift
        )
        correct = trainer.strategy.reduce(correct, reduce_op="sum")
        total = trainer.strategy.reduce(total, reduce_op="sum")
        probe = (correct.double() / total.clamp(min=1)).float()
        for s, accuracy in enumerate(probe):
            pl_module.log(f"probe/shift_acc_{s}px", accuracy)
        self._probe = probe.tolist()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks' on_test_epoch_end runs before the module's, where it scores the test.
        outcome = getattr(pl_module, "test_outcome", {})
        if not (self.active and trainer.is_global_zero and "confusion" in outcome):
            return
        name = str(pl_module.hparams.get("model", {}).get("name", "this run"))
        images = figures.test_figures(outcome)
        images["probe/translation"] = figures.probe_figure({name: self._probe})
        for tag, figure in images.items():
            image, step = figures.figure_to_array(figure), trainer.global_step
            self._writer.add_image(tag, image, step, dataformats="HWC")
