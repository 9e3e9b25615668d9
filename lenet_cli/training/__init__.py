"""Training: the LightningModule, the DataModule, the one Trainer factory, plugins, callbacks."""
