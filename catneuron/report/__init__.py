"""The static HTML report of a run: an index and one page per neuron (see `write_report`)."""

from catneuron.report.site import write_report

__all__ = ["write_report"]
