"""The evaluation report: ``metrics.nc``, PNG figures, ``report.md`` and a self-contained ``report.html``.

Everything shown is computed from the metrics dataset (:func:`training.metrics_dataset.build_dataset`), so a
reader can redraw any figure from ``metrics.nc``; only the sample rollouts are passed separately. The parts,
by what they make:

* :mod:`~evaluation.report.common` — number and unit formatting, the rows of a dataset;
* :mod:`~evaluation.report.verdicts` — what the numbers say: anchors beaten, timings to trust, solver matches;
* :mod:`~evaluation.report.tables` — the summary, every metric, the protocol card, the solver settings;
* :mod:`~evaluation.report.parameter_space` — the error over the PDE parameters (tail tables and figure);
* :mod:`~evaluation.report.figures`, :mod:`~evaluation.report.samples`, :mod:`~evaluation.report.style` — figures;
* :mod:`~evaluation.report.writers` — ``report.md`` and ``report.html`` from one list of blocks.
"""

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report draws to files only

from evaluation.report.common import Table, safe_name, trained_models
from evaluation.report.figures import (
    draw_figures,
    figure_correlation,
    figure_cost_accuracy,
    figure_error,
    figure_spectra,
)
from evaluation.report.parameter_space import (
    PARAMETER_FIGURE,
    binned,
    figure_parameter_space,
    inside_training_range,
    parameter_caption,
    parameter_coverage,
    parameter_label,
    parameter_quantities,
    parameters,
    tail_tables,
    varying_parameters,
)
from evaluation.report.samples import figure_samples
from evaluation.report.style import save_figure
from evaluation.report.tables import (
    _training_data,
    definitions,
    metric_tables,
    protocol_card,
    reference_note,
    solver_table,
    summary_table,
)
from evaluation.report.verdicts import same_as_reference
from evaluation.report.writers import write_documents, write_report

__all__ = [
    "PARAMETER_FIGURE", "Table", "_training_data", "binned", "definitions", "draw_figures",
    "figure_correlation", "figure_cost_accuracy", "figure_error", "figure_parameter_space", "figure_samples",
    "figure_spectra", "inside_training_range", "metric_tables", "parameter_caption", "parameter_coverage",
    "parameter_label", "parameter_quantities", "parameters", "protocol_card", "reference_note",
    "safe_name", "same_as_reference", "save_figure", "solver_table", "summary_table", "tail_tables",
    "trained_models", "varying_parameters", "write_documents", "write_report",
]  # fmt: skip
