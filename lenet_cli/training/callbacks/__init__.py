"""Lightning callbacks of a training run: checkpoints, the progress bar, TensorBoard pictures."""
