"""Online streaming from solvers, replay buffers, HDF5 datasets and the Lightning DataModules."""

from data.buffer import ReplayBuffer
from data.datamodule import OfflineDataModule, OnlineDataModule
from data.hdf5 import HDF5Windows, inspect_split, open_dataset, read_trajectories, write_split
from data.normalize import Normalizer
from data.stream import TrajectoryStream
from data.timegrid import TimeGrid
from data.trajectories import trajectory_seed

__all__ = [
    "HDF5Windows",
    "Normalizer",
    "OfflineDataModule",
    "OnlineDataModule",
    "ReplayBuffer",
    "TimeGrid",
    "TrajectoryStream",
    "inspect_split",
    "open_dataset",
    "read_trajectories",
    "trajectory_seed",
    "write_split",
]
