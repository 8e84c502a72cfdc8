"""nst-lightning: Gatys et al.'s neural style transfer as a Lightning + Hydra experiment framework."""

__version__ = "0.1.0"
