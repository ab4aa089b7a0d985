"""Datasets before training: ``hpo data check`` (every problem at once) and ``hpo data report`` (EDA)."""

from hpo.data._check import KINDS, CheckReport, Finding, check_data
from hpo.data._report import ReportFiles, write_report

__all__ = ["KINDS", "CheckReport", "Finding", "ReportFiles", "check_data", "write_report"]
