"""Datasets before training: ``hpo data check`` (every problem at once) and ``hpo data report`` (EDA).

Both read datasets with the layout rules training uses (``training.layouts``), so a dataset the
check passes is one training accepts.
"""

from hpo.data._check import KINDS, CheckReport, check_data
from hpo.data._report import ReportFiles, write_report
from training.layouts import Problem

__all__ = ["KINDS", "CheckReport", "Problem", "ReportFiles", "check_data", "write_report"]
