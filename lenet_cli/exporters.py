"""Exporting a checkpoint's network as ONNX (torch.export + onnxscript) or TorchScript. The model
(raw pixels in [0, 1] to logits: normalising and padding are in its input stage) is exported into
memory, run by its own runtime (onnxruntime, torch.jit) and compared with PyTorch; only then is
the file written (atomically), so a mismatch leaves no file behind."""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lenet_cli.errors import LenetError
from lenet_cli.files import write_bytes_atomic

EXAMPLE_BATCH, CHECK_BATCH = 2, 17  # export with one batch size, verify with another and with 1
TOLERANCE = 1e-4  # max abs difference of the logits, relative to their scale


class ExportError(LenetError, title="Export failed"):
    """The export failed, or the exported model computes something else than PyTorch."""


def export_onnx(network, example, model_cfg: dict) -> bytes:
    import onnx
    import onnxscript  # noqa: F401  (torch's ONNX exporter needs it: named if it is missing)
    import torch

    program = torch.onnx.export(
        network,
        (example,),
        dynamo=True,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    model = program.model_proto
    # Say what the model expects inside the file, for whoever deploys it without this tool.
    shape = "x".join(str(s) for s in example.shape[1:])
    onnx.helper.set_model_props(
        model,
        {
            "input": f"pixels: float32 (N, {shape}) in [0, 1], ink bright on black (MNIST)",
            "output": "logits: float32 (N, classes); softmax gives probabilities",
            "lenet_cli.model": json.dumps(model_cfg, sort_keys=True),
        },
    )
    return model.SerializeToString()


def run_onnx(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"pixels": x})[0]  # the input's name, set by export_onnx


def export_torchscript(network, example, model_cfg: dict) -> bytes:
    import torch

    # A trace is the whole model: the networks have no data-dependent branches. (torch.jit is
    # deprecated but still the format that C++ libtorch and older deployments load.)
    buffer = io.BytesIO()
    with torch.no_grad():
        traced = torch.jit.trace(network, example)
        torch.jit.save(traced, buffer, _extra_files={"lenet_cli.model": json.dumps(model_cfg)})
    return buffer.getvalue()


def run_torchscript(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    module = torch.jit.load(io.BytesIO(model), map_location="cpu")
    return lambda x: module(torch.from_numpy(x)).numpy()  # verify runs it without autograd


EXPORTERS = {"onnx": (export_onnx, run_onnx), "torchscript": (export_torchscript, run_torchscript)}


def verify(network, run: Callable[[np.ndarray], np.ndarray], input_shape: tuple[int, ...]) -> float:
    """Max abs difference of the logits between PyTorch and the exported model on check batches."""
    import torch

    random = np.random.default_rng(0).random((CHECK_BATCH, *input_shape), dtype=np.float32)
    worst = 0.0
    for x in (random, np.zeros((1, *input_shape), dtype=np.float32)):
        with torch.no_grad():  # the exported model too: a TorchScript one records autograd
            expected = network(torch.from_numpy(x)).numpy()
            got = np.asarray(run(x))
        if got.shape != expected.shape:
            raise ExportError(
                f"The exported model returned shape {got.shape} for a batch of "
                f"{len(x)}; PyTorch returns {expected.shape}."
            )
        difference = float(np.abs(got - expected).max())
        worst, scale = max(worst, difference), max(1.0, float(np.abs(expected).max()))
        if difference > TOLERANCE * scale or (got.argmax(1) != expected.argmax(1)).any():
            raise ExportError(
                f"The exported model differs from PyTorch: max abs difference of the logits "
                f"{difference:.3g} (allowed {TOLERANCE * scale:.3g}). No file was written.",
                fix="Report this with the checkpoint's model config; try the other --format.",
            )
    return worst


def export(checkpoint_path: str, fmt: str, output: Path) -> tuple[float, tuple[int, ...]]:
    """Export, verify, then write `output`; returns (max abs difference, input shape)."""
    import torch

    from lenet_cli.checkpoint_io import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    if output.is_dir():
        raise ExportError(
            f"--output {output} is a folder.", fix=f"Give a file name, e.g. {output}/lenet.{fmt}."
        )
    write, load = EXPORTERS[fmt]
    seeded = torch.Generator().manual_seed(0)
    example = torch.rand(EXAMPLE_BATCH, *checkpoint.input_shape, generator=seeded)
    try:
        with warnings.catch_warnings():  # the exporters' own deprecation and tracer warnings
            warnings.simplefilter("ignore")
            model = write(checkpoint.network, example, checkpoint.model_cfg)
            run = load(model)
    except Exception as error:  # the exporters and runtimes raise many kinds
        fix = "Try the other --format."
        if isinstance(error, ImportError):  # onnx, onnxscript or onnxruntime is missing
            fix = "pip install onnx onnxscript onnxruntime (or lenet-cli[dev])."
        # The useful line of the error: the operation ONNX could not translate, if that was it.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # torch colours its messages
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = f"{type(error).__name__}: {lines[0][:300] if lines else ''}"
        if missing := re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text):
            reason = f"ONNX has no translation for the operation {missing.group(1)}."
        raise ExportError(f"{fmt} export of {checkpoint.name} failed: {reason}", fix=fix) from None
    difference = verify(checkpoint.network, run, checkpoint.input_shape)
    try:
        write_bytes_atomic(output, model)
    except OSError as error:
        raise ExportError(
            f"Cannot write to {output.parent}: {error.strerror}.",
            fix="Choose an --output in a folder you can write to.",
        ) from None
    return difference, checkpoint.input_shape
