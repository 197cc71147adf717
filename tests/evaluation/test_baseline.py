import math

import hydra

from data.timegrid import TimeGrid
from data.trajectories import generate
from evaluation import metrics
from evaluation.baseline import run_solver

KS = {"_target_": "solvers.ks.KuramotoSivashinsky", "n": 64, "length": 32.0, "dt": 0.25, "burn_in": 20.0}


def test_solver_baseline_marks_diverged_and_refused_settings():
    pde = {**KS, "nu": 0.2}  # n/2 under-resolves and blows up; KS refuses dt > 2 nu = 0.4
    truth = generate(hydra.utils.instantiate(pde), 0, "test", range(2), TimeGrid(0.25, 0.25, 14).times())
    u = truth.u.float()
    runs = {r.label: r for r in run_solver(pde, u[:, 3], truth.params, 0.25, 10, 2, [2], [2, 4])}
    assert list(runs) == ["reference", "n/2", "2×dt", "4×dt"]
    reference = runs["reference"]
    assert reference.status == "ok" and reference.pred.shape == (2, 10, 1, 64)
    job, frames = reference.job(4)  # the timed unit: the first batch over the first 4 frames
    assert frames == 4 and job().shape == (2, 5, 1, 64) and math.isnan(reference.seconds_per_step)
    assert runs["n/2"].job is None
    assert metrics.relative_l2(reference.pred.double(), u[:, 4:].double()).max() < 1e-4
    assert runs["n/2"].pred is None and "blew up" in runs["n/2"].status
    assert runs["2×dt"].pred is None and "dt must be <=" in runs["2×dt"].status
    assert runs["4×dt"].status.startswith("not run")


def test_solver_baseline_coarse_grid_and_larger_step():
    pde = {**KS, "nu": 1.0}
    truth = generate(hydra.utils.instantiate(pde), 0, "test", range(2), TimeGrid(0.25, 0.25, 12).times())
    u, true = truth.u.float(), truth.u[:, 4:].double()
    reference, coarse, step = run_solver(pde, u[:, 3], truth.params, 0.25, 8, 2, [2], [2])
    assert coarse.pred.shape == reference.pred.shape == (2, 8, 1, 64)  # interpolated back to n
    ref_error = metrics.relative_l2(reference.pred.double(), true).mean()
    assert ref_error < 1e-5
    assert metrics.relative_l2(coarse.pred.double(), true).mean() > 10 * ref_error
    assert step.index == [1, 3, 5, 7] and step.pred.shape == (2, 4, 1, 64)
    job, frames = step.job(3)  # every second frame: the solve covers frames 1 … 4
    assert frames == 4 and job().shape == (2, 3, 1, 64)
    assert step.job(100)[1] == 8
    assert metrics.relative_l2(step.pred.double(), true[:, step.index]).max() < 1e-2


def test_coarser_settings_coarsen_the_solve_grid():
    from evaluation.baseline import settings

    fine = {**KS, "n": 16, "n_solve": 64}
    assert [(label, n) for label, n, _ in settings(fine, [2, 4], [2])] == [
        ("reference", 64),
        ("n/2", 32),
        ("n/4", 16),
        ("2×dt", 64),
    ]
