"""TensorBoard pictures of what the network learned (switch off with `logger.images=false`).

Every epoch (rank 0):   filters/C1 (first-layer kernels), filters/C3_summed_over_inputs,
                        feature_maps/<i>_<layer> for 8 fixed test digits, weights/* histograms,
                        grad_norm/* (mean over the epoch, sampled every log_every_n_steps)
Once:                   the model graph
After the test (all ranks add up their counts, rank 0 draws):
                        confusion_matrix, mistakes/test, probe/translation (plot), and the scalars
                        test/acc_class_<k> and probe/shift_acc_<s>px (also in metrics.json)

Cost is kept to a few percent of a run: grids are numpy, figures are drawn once after the test,
the probe uses `probe_samples` test digits spread over the test set, and per-step work is a
few fused ops.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn
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


def add_rgb_image(writer, tag: str, image: np.ndarray, step: int) -> None:
    """SummaryWriter.add_image for an RGB uint8 array (H, W, 3)."""
    writer.add_image(tag, image, step, dataformats="HWC")


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
        self._digits: torch.Tensor | None = None
        self._graph_done = False
        self._layer_names: list[str] = []  # gradient norms are summed per layer of the network
        self._params: list[nn.Parameter] = []
        self._owner: list[int] = []  # index into _layer_names of each parameter
        self._owner_tensor: torch.Tensor | None = None
        self._grad_sum: torch.Tensor | None = None
        self._grad_steps = 0
        self._hook: torch.utils.hooks.RemovableHandle | None = None  # on the network while testing

    # ---- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _network(pl_module: pl.LightningModule) -> nn.Module:
        return getattr(pl_module, "net", pl_module)

    @staticmethod
    def _writer(trainer: pl.Trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def _fixed_digits(self, trainer: pl.Trainer, device: torch.device) -> torch.Tensor | None:
        """`digits` test images of different classes (the same in every epoch and every run)."""
        try:
            images, labels = next(iter(trainer.datamodule.test_dataloader()))
        except Exception:  # no datamodule, or no test split: the other pictures still work
            return None
        chosen: list[int] = []
        for i, label in enumerate(labels.tolist()):
            if label not in [labels[j].item() for j in chosen]:
                chosen.append(i)
            if len(chosen) == self.digits:
                break
        chosen += [i for i in range(len(labels)) if i not in chosen][: self.digits - len(chosen)]
        x = images[chosen]
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        return x.to(device)

    # ---- fit -----------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Decided identically on every rank: the test-time sums below need every rank to take part.
        self.active = self.enabled and any(
            isinstance(lg, TensorBoardLogger) for lg in trainer.loggers
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.active and trainer.is_global_zero):
            return
        net = self._network(pl_module)
        trainable = {
            name: [p for p in layer.parameters() if p.requires_grad]
            for name, layer in getattr(net, "named_layers", dict)().items()
        }
        trainable = {name: params for name, params in trainable.items() if params}
        self._layer_names = list(trainable)
        self._params = [p for params in trainable.values() for p in params]
        self._owner = [i for i, params in enumerate(trainable.values()) for _ in params]
        self._grad_sum = torch.zeros(len(self._layer_names) + 1, device=pl_module.device)
        self._grad_steps, self._owner_tensor = 0, None
        self._digits = self._fixed_digits(trainer, pl_module.device)
        if self.graph and not self._graph_done and self._digits is not None:
            self._graph_done = True
            try:
                with warnings.catch_warnings():  # torch.jit.trace's deprecation notice, every run
                    warnings.simplefilter("ignore")
                    self._writer(trainer).add_graph(net, self._digits)
            except Exception as error:  # tracing is best effort; a picture must never stop a run
                rank_zero_warn(f"TensorBoard model graph skipped: {error}")
        self._draw_epoch(trainer, net)  # step 0: the random initial filters

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer
    ) -> None:
        if not (self.active and trainer.is_global_zero) or not self._layer_names:
            return
        if trainer.global_step % trainer.log_every_n_steps:
            return  # sampled at the logging cadence: the epoch mean needs no more, and it is cheap
        # A handful of fused ops, kept on the device: no synchronisation with the host.
        present = [
            (p.grad, i)
            for p, i in zip(self._params, self._owner, strict=True)
            if p.grad is not None
        ]
        if not present:
            return
        norms = torch.stack([torch.linalg.vector_norm(g) for g, _ in present]).float()
        if len(present) != len(self._params) or self._owner_tensor is None:
            self._owner_tensor = torch.tensor([i for _, i in present], device=norms.device)
        owner = self._owner_tensor
        squares = torch.zeros(len(self._layer_names), device=norms.device).index_add_(
            0, owner, norms.square()
        )
        self._grad_sum += torch.cat([squares.sqrt(), squares.sum().sqrt().view(1)])
        self._grad_steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.active and trainer.is_global_zero):
            return
        net, writer, step = self._network(pl_module), self._writer(trainer), trainer.global_step
        for name, param in net.named_parameters():
            try:
                writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            except ValueError:
                # Weights blown up by a huge learning rate fall outside TensorBoard's fixed bins
                # (about +-1e12) and it raises "The histogram is empty": the run goes on without
                # that histogram (the weight check of LeNetModule stops it if they overflow).
                continue
        if self._grad_steps:
            means = (self._grad_sum / self._grad_steps).tolist()
            for name, value in zip([*self._layer_names, "total"], means, strict=True):
                writer.add_scalar(f"grad_norm/{name}", value, step)
            self._grad_sum.zero_()
            self._grad_steps = 0
        self._draw_epoch(trainer, net)

    @torch.no_grad()
    def _draw_epoch(self, trainer: pl.Trainer, net: nn.Module) -> None:
        writer, step = self._writer(trainer), trainer.global_step
        convs = first_convs(net)
        if convs:
            name, weight = convs[0]
            kernels = weight.flatten(0, 1) if weight.shape[1] <= 3 else weight.sum(1)
            add_rgb_image(
                writer, f"filters/{name}", figures.filters_image(kernels.cpu().numpy()), step
            )
        if len(convs) > 1:
            name, weight = convs[1]
            image = figures.filters_image(weight.sum(1).cpu().numpy())
            add_rgb_image(writer, f"filters/{name}_summed_over_inputs", image, step)
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
            units = first.weight[:32].detach().view(-1, h, w).cpu().numpy()
            name = next((k for k, v in net.named_layers().items() if first in v.modules()), "first")
            image = figures.filters_image(units)
            add_rgb_image(writer, f"filters/{name}_first_32_units", image, step)

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
        digits = self._digits[:, 0].cpu().numpy()
        for i, name in enumerate(names, start=1):
            image = figures.feature_maps_image(digits, outputs[name].float().cpu().numpy())
            add_rgb_image(writer, f"feature_maps/{i}_{name}", image, step)

    # ---- test ----------------------------------------------------------------------------------

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._confusion: torch.Tensor | None = None
        self._worst: tuple[torch.Tensor, ...] | None = None  # confidence, images, true, predicted
        self._probe_x: list[torch.Tensor] = []
        self._probe_y: list[torch.Tensor] = []
        self._probe_n = 0
        self._logits: torch.Tensor | None = None
        if self.active:  # keep the logits of the test step's own forward pass instead of redoing it
            self._hook = self._network(pl_module).register_forward_hook(self._keep_logits)

    def _keep_logits(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._logits = output

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hook()

    @torch.no_grad()
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.active:
            return
        x, y = batch
        logits = (
            self._logits
            if self._logits is not None and len(self._logits) == len(y)
            else pl_module(x)
        )
        self._logits = None
        probabilities = logits.float().softmax(1)
        confidence, predicted = probabilities.max(1)
        k = probabilities.shape[1]
        counts = torch.bincount(y * k + predicted, minlength=k * k).view(k, k)
        self._confusion = counts if self._confusion is None else self._confusion + counts
        wrong = predicted != y
        if wrong.any():
            batch_worst = (confidence[wrong], x[wrong, 0], y[wrong], predicted[wrong])
            if self._worst is not None:
                batch_worst = tuple(
                    torch.cat([a, b]) for a, b in zip(self._worst, batch_worst, strict=True)
                )
            keep = batch_worst[0].topk(min(self.mistakes, len(batch_worst[0]))).indices
            self._worst = tuple(t[keep] for t in batch_worst)
        wanted = -(-self.probe_samples // trainer.world_size)  # this process's part
        if self._probe_n < wanted:
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
        self._remove_hook()
        if not self.active or self._confusion is None:
            return
        confusion = trainer.strategy.reduce(self._confusion, reduce_op="sum")
        support = confusion.sum(1)
        for k in range(len(confusion)):
            if support[k] > 0:
                pl_module.log(f"test/acc_class_{k}", (confusion[k, k] / support[k]).float())
        correct, total = probe_counts(
            pl_module, torch.cat(self._probe_x), torch.cat(self._probe_y), self.max_shift
        )
        correct = trainer.strategy.reduce(correct, reduce_op="sum")
        total = trainer.strategy.reduce(total, reduce_op="sum")
        probe = (correct.double() / total.clamp(min=1)).float()
        for s, accuracy in enumerate(probe):
            pl_module.log(f"probe/shift_acc_{s}px", accuracy)
        if trainer.is_global_zero:
            self._draw_test(trainer, confusion.cpu().numpy(), probe.tolist(), pl_module)

    def _draw_test(
        self, trainer: pl.Trainer, confusion, probe: list[float], pl_module: pl.LightningModule
    ) -> None:
        writer, step = self._writer(trainer), trainer.global_step
        name = str(getattr(pl_module, "hparams", {}).get("model", {}).get("name", "this run"))
        images = {
            "confusion_matrix": figures.confusion_figure(confusion),
            "probe/translation": figures.probe_figure({name: probe}),
        }
        if self._worst is not None:
            confidence, digits, true, predicted = (t.float().cpu().numpy() for t in self._worst)
            images["mistakes/test"] = figures.mistakes_figure(
                digits,
                true.astype(int).tolist(),
                predicted.astype(int).tolist(),
                confidence.tolist(),
            )
        else:
            images["mistakes/test"] = figures.mistakes_figure(np.zeros((0, 1, 1)), [], [], [])
        for tag, figure in images.items():
            add_rgb_image(writer, tag, figures.figure_to_array(figure), step)
