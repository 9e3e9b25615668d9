"""The network family: paper parameter counts, every knob combination, geometry errors, RBF head."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from conftest import compose_train
from omegaconf import OmegaConf

from lenet_cli.errors import ConfigError, GeometryError
from lenet_cli.models import LeNet, build_network
from lenet_cli.models.choices import ACTIVATIONS, POOLINGS


def network(tmp_path: Path, *overrides: str) -> torch.nn.Module:
    cfg = compose_train(list(overrides), tmp_path)
    return build_network(OmegaConf.to_container(cfg.model, resolve=True))


def layer_params(net: torch.nn.Module) -> dict[str, int]:
    return {n: sum(p.numel() for p in m.parameters()) for n, m in net.named_layers().items()}


def test_classic_has_the_papers_parameter_counts(tmp_path: Path) -> None:
    counts = layer_params(network(tmp_path, "model=classic"))
    assert {k: counts[k] for k in ("C1", "S2", "C3", "S4", "C5", "F6")} == {
        "C1": 156,
        "S2": 12,
        "C3": 1516,
        "S4": 32,
        "C5": 48120,
        "F6": 10164,
    }


def test_modern_has_61706_parameters(tmp_path: Path) -> None:
    net = network(tmp_path, "model=modern")
    assert sum(p.numel() for p in net.parameters()) == 61706


@pytest.mark.parametrize("variant", ["classic", "modern", "d2l", "tutorial", "mlp"])
def test_each_variant_maps_28x28_pixels_to_10_logits(variant: str, tmp_path: Path) -> None:
    net = network(tmp_path, f"model={variant}")
    x = torch.rand(4, 1, 28, 28)
    logits = net(x)
    assert logits.shape == (4, 10)
    # Logits, not probabilities: no activation squashes the output layer.
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))
    assert not isinstance(
        list(net.modules())[-1], (torch.nn.Sigmoid, torch.nn.Softmax, torch.nn.Tanh)
    )


def test_d2l_and_tutorial_geometry(tmp_path: Path) -> None:
    d2l = network(tmp_path, "model=d2l")
    assert [r.shape for r in d2l.trace if r.name in ("C1", "C5")] == [(6, 28, 28), (120,)]
    tutorial = network(tmp_path, "model=tutorial")
    assert tutorial.classifier.C5[0].in_features == 16 * 5 * 5


COMBOS = list(itertools.product(ACTIVATIONS, POOLINGS, (3, 5, 7)))


@pytest.mark.parametrize(("activation", "pooling", "kernel"), COMBOS)
def test_every_activation_pooling_kernel_trains_a_step(
    activation: str, pooling: str, kernel: int
) -> None:
    net = LeNet(activation=activation, pooling=pooling, kernel_size=kernel, input_padding=2)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("kernel", [2, 4, 6])
def test_even_kernels_and_same_padding(kernel: int) -> None:
    net = LeNet(kernel_size=kernel, padding="same", batch_norm=True, dropout=0.2, hidden=[64])
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert net.trace[1].shape == (6, 28, 28)  # "same" keeps the size


def test_impossible_geometry_shows_the_trace() -> None:
    with pytest.raises(GeometryError) as caught:
        LeNet(kernel_size=15, padding=0, input_padding=2)
    error = caught.value
    assert "C3" in error.message
    assert "C1" in error.details and "S2" in error.details and "->" in error.details
    assert "kernel_size" in error.fix


def test_lecun_table_needs_6_and_16_maps() -> None:
    with pytest.raises(ConfigError, match="c3_table"):
        LeNet(channels=[8, 16], c3_table="lecun")


def test_c3_table_connections_follow_table_one() -> None:
    net = LeNet(c3_table="lecun", input_padding=2)
    mask = net.features.C3[0].mask
    assert mask.sum(1).tolist() == [3] * 6 + [4] * 9 + [6]
    assert mask[12].nonzero().flatten().tolist() == [0, 1, 3, 4]  # non-contiguous


def test_rbf_head_trains_with_decreasing_loss() -> None:
    torch.manual_seed(0)
    net = LeNet(
        activation="scaled_tanh", pooling="trainable", c3_table="lecun", head="rbf", input_padding=2
    )
    assert sum(p.numel() for p in net.classifier.output.parameters()) == 0  # fixed codes
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
