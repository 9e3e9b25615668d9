"""The network family: paper parameter counts, every knob combination, geometry errors, RBF head."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_train
from omegaconf import OmegaConf
from torch.nn import functional as F

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


@pytest.mark.parametrize(
    "variant", ["classic", "modern", "d2l", "tutorial", "lenet1", "lenet4", "mlp"]
)
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


# Table I as the paper prints it: row i marks (X) the C3 maps that read S2 map i.
TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def test_c3_table_connections_follow_table_one() -> None:
    net = LeNet(c3_table="lecun", input_padding=2)
    mask = net.features.C3[0].mask
    assert mask.sum(1).tolist() == [3] * 6 + [4] * 9 + [6]
    assert mask[12].nonzero().flatten().tolist() == [0, 1, 3, 4]  # non-contiguous
    printed = [[cell == "X" for cell in row] for row in TABLE_I.split()]
    assert mask.T.tolist() == printed


def masked_full_weight(conv: torch.nn.Module) -> torch.Tensor:
    """PartialConv2d's full weight as it was built before its index buffer: through the boolean
    mask (a nonzero() and a device-to-host wait at every step on a GPU). The reference."""
    k = conv.kernel_size
    weight = conv.weight.new_zeros(conv.out_channels, conv.in_channels, k, k)
    weight[conv.mask] = conv.weight
    return weight


def repeated_subsampling(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Subsampling with copies as it was computed before its index buffer (the reference)."""
    summed = F.avg_pool2d(x, layer.size) * (layer.size * layer.size)
    summed = summed.repeat_interleave(layer.copies, dim=1)
    return summed * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)


def same_outputs_and_gradients(layer, x: torch.Tensor, expected: torch.Tensor) -> bool:
    """The layer gives `expected` on x, and the same gradients as `expected`, bit for bit."""
    inputs, grad = [x, layer.weight, layer.bias], torch.randn_like(expected)
    out = layer(x)
    grads = torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad)
    pairs = zip(*grads, strict=True)
    return torch.equal(out, expected) and all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("variant", ["classic", "lenet1"])
def test_partial_table_weight_is_todays_bit_for_bit(variant: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    conv = network(tmp_path, f"model={variant}").features.C3[0]
    assert torch.equal(conv.full_weight(), masked_full_weight(conv))
    x = torch.randn(3, conv.in_channels, 12, 12, requires_grad=True)
    assert same_outputs_and_gradients(conv, x, F.conv2d(x, masked_full_weight(conv), conv.bias))


def test_paired_subsampling_maps_are_todays_bit_for_bit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    s2 = network(tmp_path, "model=lenet4").features.S2[0]
    with torch.no_grad():  # coefficients that differ, so a mixed-up pair would show
        s2.weight.copy_(torch.randn(8))
        s2.bias.copy_(torch.randn(8))
    x = torch.randn(3, 4, 28, 28, requires_grad=True)
    assert same_outputs_and_gradients(s2, x, repeated_subsampling(s2, x))


def test_state_dict_names_and_shapes_are_those_checkpoints_hold(tmp_path: Path) -> None:
    # Written by the builder before the index buffers; a checkpoint loads when both match.
    expected = {"features.input.mean": (), "features.input.std": (),
        "features.C1.0.weight": (6, 1, 5, 5), "features.C1.0.bias": (6,),
        "features.S2.0.weight": (6,), "features.S2.0.bias": (6,),
        "features.C3.0.weight": (60, 5, 5), "features.C3.0.bias": (16,),
        "features.S4.0.weight": (16,), "features.S4.0.bias": (16,),
        "classifier.C5.0.weight": (120, 400), "classifier.C5.0.bias": (120,),
        "classifier.F6.0.weight": (84, 120), "classifier.F6.0.bias": (84,),
        "classifier.output.weight": (10, 84), "classifier.output.bias": (10,)}  # fmt: skip
    state = network(tmp_path, "model=classic").state_dict()
    assert {name: tuple(tensor.shape) for name, tensor in state.items()} == expected
    lenet4 = network(tmp_path, "model=lenet4").state_dict()
    assert [name for name in lenet4 if ".S2." in name] == [
        "features.S2.0.weight",
        "features.S2.0.bias",
    ]


NAMED_MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
# Ops that make a GPU wait for the host (a data-dependent size or a value read back), as the CPU
# profiler names them; on CUDA each is a synchronisation at every training step.
SYNCING_OPS = {"aten::nonzero", "aten::item", "aten::masked_select", "aten::repeat_interleave"}


@pytest.mark.parametrize("variant", NAMED_MODELS)
def test_a_training_step_never_waits_for_the_host(variant: str, tmp_path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    net = network(tmp_path, f"model={variant}")
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        net(torch.rand(2, 1, 28, 28)).sum().backward()
    ops = {event.name for event in profiled.events()}
    assert "aten::linear" in ops  # the profiler saw the step
    assert not ops.intersection(SYNCING_OPS)


@pytest.mark.parametrize("variant", NAMED_MODELS)
def test_torch_compile_captures_each_named_model_in_one_graph(variant: str, tmp_path: Path) -> None:
    net = network(tmp_path, f"model={variant}")
    explained = torch._dynamo.explain(net)(torch.rand(2, 1, 28, 28))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def per_layer(net: torch.nn.Module) -> dict[str, tuple]:
    """Each traced layer's (output shape, trainable parameters, MACs per image)."""
    params = layer_params(net)
    return {row.name: (row.shape, params.get(row.name, 0), row.macs) for row in net.trace}


def test_lenet1_layers_match_the_hand_computed_counts(tmp_path: Path) -> None:
    net = network(tmp_path, "model=lenet1")
    assert per_layer(net) == {
        "input": ((1, 28, 28), 0, 0),
        "C1": ((4, 24, 24), 4 * (25 + 1), 24 * 24 * 4 * 25),
        "S2": ((4, 12, 12), 4 * 2, 4 * 12 * 12),
        "C3": ((12, 8, 8), 20 * 25 + 12, 8 * 8 * 20 * 25),
        "S4": ((12, 4, 4), 12 * 2, 12 * 4 * 4),
        "output": ((10,), 192 * 10 + 10, 192 * 10),
    }
    assert sum(p.numel() for p in net.parameters()) == 2578  # the 1989 network's count
    assert sum(row.macs for row in net.trace) == 92288


def test_lenet4_layers_match_the_hand_computed_counts(tmp_path: Path) -> None:
    net = network(tmp_path, "model=lenet4")
    assert per_layer(net) == {
        "input": ((1, 32, 32), 0, 0),
        "C1": ((4, 28, 28), 4 * (25 + 1), 28 * 28 * 4 * 25),
        "S2": ((8, 14, 14), 8 * 2, 8 * 14 * 14),  # two subsampling maps per C1 map
        "C3": ((16, 10, 10), 16 * (8 * 25 + 1), 10 * 10 * 16 * 8 * 25),
        "S4": ((16, 5, 5), 16 * 2, 16 * 5 * 5),
        "C5": ((120,), 400 * 120 + 120, 400 * 120),
        "output": ((10,), 120 * 10 + 10, 120 * 10),
    }
    assert sum(p.numel() for p in net.parameters()) == 52698
    assert sum(row.macs for row in net.trace) == 449568


def test_traced_shapes_hold_through_the_forward_pass(tmp_path: Path) -> None:
    for variant in ("lenet1", "lenet4", "classic", "modern", "d2l", "tutorial"):
        net = network(tmp_path, f"model={variant}")
        x = torch.rand(3, 1, 28, 28)
        for name, layer in net.features.named_children():
            x = layer(x)
            expected = next(row.shape for row in net.trace if row.name == name)
            assert x.shape == (3, *expected), (variant, name)
        assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_lenet1_c3_maps_read_only_their_tables_s2_maps(tmp_path: Path) -> None:
    net = network(tmp_path, "model=lenet1")
    c3 = net.features.C3
    mask = c3[0].mask
    assert mask.sum().item() == 20 and mask.sum(0).tolist() == [5, 5, 5, 5]
    assert mask.sum(1).tolist() == [1, 2, 2] * 4
    # Group i (C3 maps 3i, 3i+1, 3i+2) reads S2 map i alone, with i+1, and with i+2 (mod 4).
    table = [sorted({i, (i + step) % 4}) for i in range(4) for step in (0, 1, 2)]
    for out_map, in_maps in enumerate(table):
        s2 = torch.randn(2, 4, 12, 12, requires_grad=True)
        c3(s2)[:, out_map].sum().backward()
        touched = (s2.grad.abs().sum((0, 2, 3)) > 0).nonzero().flatten().tolist()
        assert touched == in_maps, out_map


def test_lenet4_subsampling_maps_come_in_pairs_with_their_own_weights(tmp_path: Path) -> None:
    net = network(tmp_path, "model=lenet4")
    subsampling = net.features.S2[0]
    with torch.no_grad():
        subsampling.weight.copy_(torch.arange(1.0, 9.0))
        subsampling.bias.copy_(torch.arange(8.0) / 10)
    x = torch.rand(2, 4, 28, 28)
    sums = torch.nn.functional.avg_pool2d(x, 2) * 4
    out = subsampling(x)
    for s2_map in range(8):  # S2 maps 2i and 2i+1 both subsample C1 map i
        expected = sums[:, s2_map // 2] * (s2_map + 1) + s2_map / 10
        assert torch.allclose(out[:, s2_map], expected, atol=1e-5), s2_map


@pytest.mark.parametrize("pooling", ["max", "avg", "stride"])
def test_pool_maps_needs_trainable_subsampling(tmp_path: Path, pooling: str) -> None:
    with pytest.raises(ConfigError, match="pool_maps") as caught:
        network(tmp_path, "model=lenet4", f"model.pooling={pooling}")
    assert "model.pooling=trainable" in caught.value.fix


def test_each_partial_table_fits_only_its_geometry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="connects 4 S2 maps to 12 C3 maps") as caught:
        network(tmp_path, "model=classic", "model.c3_table=lenet1")
    assert "model.channels=[4,12]" in caught.value.fix
    with pytest.raises(ConfigError, match="connects 6 S2 maps to 16 C3 maps") as caught:
        network(tmp_path, "model=lenet1", "model.c3_table=lecun")
    assert "model.channels=[6,16]" in caught.value.fix
    with pytest.raises(ConfigError, match="pool_maps"):  # twice the S2 maps: no longer 6
        network(tmp_path, "model=classic", "model.pool_maps=[2,1]")


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
