"""Test-wide settings: tests use small tensors, for which one torch thread is fastest and most stable."""

import os

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # training runs built in tests keep one thread (threads=auto)
torch.set_num_threads(1)
