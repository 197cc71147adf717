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

The package exports what the training layer calls; everything else is imported from its part.
"""

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report draws to files only

from evaluation.report.common import safe_name
from evaluation.report.samples import figure_samples
from evaluation.report.style import save_figure
from evaluation.report.tables import summary_table
from evaluation.report.writers import write_report

__all__ = ["figure_samples", "safe_name", "save_figure", "summary_table", "write_report"]
