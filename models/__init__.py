"""Network architectures (FNO, U-Net, SineNet, LSM, PDE-Refiner) and shared layers.

Importing the package defines every architecture, which registers it in :data:`models.base.NETWORKS`.
"""

from models.base import NETWORKS, SurrogateNet, network_class
from models.fno import FNO
from models.lsm import LSM
from models.pde_refiner import PDERefiner
from models.sinenet import SineNet
from models.unet import UNet

__all__ = ["FNO", "LSM", "NETWORKS", "PDERefiner", "SineNet", "SurrogateNet", "UNet", "network_class"]
