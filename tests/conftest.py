"""Test-wide settings: tests use small tensors, for which one torch thread is fastest and most stable."""

import os

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(1)
