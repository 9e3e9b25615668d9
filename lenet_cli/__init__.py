"""lenet-cli: train, compare and understand LeNet-style CNNs on MNIST from the command line."""

__version__ = "0.1.0"
