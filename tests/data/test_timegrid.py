"""The time grid (frames, intervals, the model's step in checkpoints) and the conditioning layout."""

import pytest
import torch

from data.normalize import CondLayout, Normalizer
from data.timegrid import TimeGrid
from solvers.errors import ConfigError
from solvers.ks import KuramotoSivashinsky
from tests.data.conftest import Heat


def test_times_stride_and_round_trip():
    grid = TimeGrid(0.2, 0.8, 5)
    assert grid.stride == 4
    torch.testing.assert_close(grid.times(), torch.tensor([0.0, 0.8, 1.6, 2.4, 3.2], dtype=torch.float64))
    assert TimeGrid.from_dict(grid.to_dict()) == grid
    assert grid.to_dict() == {"dt": 0.2, "dt_out": 0.8, "frames": 5}


def test_coarser_steps_of_a_grid():
    grid = TimeGrid(0.1, 0.1, 9)
    assert grid.frames_per(0.2) == 2 and grid.frames_per(0.3) == 3
    assert grid.frames_per(0.15) == 0 and grid.frames_per(0.05) == 0
    coarse = grid.every(2)
    assert coarse == TimeGrid(0.1, 0.2, 5)
    torch.testing.assert_close(coarse.times(), grid.times()[::2])
    assert grid.every(3).frames == 3


def test_of_solver_uses_the_preset_interval():
    assert TimeGrid.of_solver(Heat(dt=0.1, dt_out=0.3), 4) == TimeGrid(0.1, 0.30000000000000004, 4)
    with pytest.raises(ConfigError, match=r"pde\.dt_out is missing for Heat"):
        TimeGrid.of_solver(Heat(dt_out=None), 4)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.1, 0.15, 4), r"dt_out=0\.15 is not allowed: it must be a positive multiple of dt=0\.1"),
        ((0.1, 0.2, 1), r"frames=1 is not allowed: give an int >= 2"),
        ((0.1, 0.2, 4.0), r"frames=4\.0 is not allowed"),
    ],
)
def test_bad_grids_are_refused(args, match):
    with pytest.raises(ConfigError, match=match):
        TimeGrid(*args)


@pytest.mark.parametrize(
    "value", [None, {"dt": 0.1, "dt_out": 0.2}, {"dt": 0.1, "dt_out": 0.2, "frames": 4, "t": 0}]
)
def test_a_missing_or_foreign_grid_names_the_key(value):
    with pytest.raises(
        ConfigError, match=r"config\.time_grid=.* is not a time grid: give a mapping with keys"
    ):
        TimeGrid.from_dict(value, "config.time_grid")


def test_conditioning_layout_is_parameters_then_dt():
    layout = CondLayout.of(Heat())
    assert layout.names == ("nu", "dt") and len(layout) == 2
    raw = layout.stack({"nu": torch.tensor([0.5, 0.7], dtype=torch.float64)}, torch.tensor([0.2, 0.2]))
    assert raw.dtype == torch.float32 and torch.equal(raw, torch.tensor([[0.5, 0.2], [0.7, 0.2]]))
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['nu'\]"):
        layout.stack({}, torch.tensor([0.2]))
    norm = Normalizer.from_solver(Heat(nu=(0.01, 0.1)), torch.zeros(1), torch.ones(1), 0.2)
    assert norm.layout == layout and norm.cond_dim == 2
    # nu = 0.1 is the top of its range (+1), dt = 0.2 is the model's step (1)
    cond = norm.cond({"nu": torch.tensor([0.1])}, torch.tensor([0.2]))
    torch.testing.assert_close(cond, torch.tensor([[1.0, 1.0]]))


def test_spacing_is_each_trajectorys_time_scale_times_dt_out():
    grid = TimeGrid(0.25, 0.5, 8)
    scales = torch.tensor([0.9, 1.0, 1.1], dtype=torch.float64)
    assert grid.spacing({"nu": scales, "time_scale": scales}, 3).tolist() == pytest.approx([0.45, 0.5, 0.55])
    assert grid.spacing({"nu": scales}, 3).tolist() == [0.5, 0.5, 0.5]
    assert grid.every(4).spacing({"time_scale": scales}, 3).tolist() == pytest.approx([1.8, 2.0, 2.2])


def test_conditioning_lists_what_varies_and_the_time_step_covers_the_time_scale():
    """A per-trajectory L is an entry; a time scale is not (it is in dt), and dt's range maps to [-1, 1]."""
    solver = KuramotoSivashinsky(n=32, length=[14.4, 17.6], time_scale=[0.9, 1.1], dt_out=0.25)
    layout = CondLayout.of(solver)
    assert layout.names == ("nu", "length", "dt")
    assert (
        CondLayout.of_names(KuramotoSivashinsky.param_names({"length": [1, 2], "time_scale": [1, 2]}))
        == layout
    )
    norm = Normalizer.from_solver(solver, torch.zeros(1), torch.ones(1), 1.0)  # the model steps 4 frames
    params = {
        "nu": torch.tensor([1.0, 1.0]),
        "length": torch.tensor([14.4, 17.6]),
        "time_scale": torch.ones(2),
    }
    cond = norm.cond(params, torch.tensor([0.9, 1.1]))
    torch.testing.assert_close(cond, torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
