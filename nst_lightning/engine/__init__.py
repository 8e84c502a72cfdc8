"""Running an optimisation: the LightningModule, its callbacks, outputs, the memory plan, and the stages of a run."""
