"""Network architectures (FNO, U-Net, SineNet, LSM, PDE-Refiner), shared layers and the preset registry."""

from models.registry import available, build

__all__ = ["available", "build"]
