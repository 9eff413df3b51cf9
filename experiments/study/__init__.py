"""The study behind ``python -m experiments.tour``: rows as data, a runner, a report writer."""

from experiments.study.report import confidence_interval, format_table, paired_difference, sentences
from experiments.study.runner import (
    StudyConfig,
    StudyData,
    choose,
    prepare_data,
    run_row,
    search,
    transfer,
)
from experiments.study.spec import Row, combination_space, default_rows, extended_rows, log_grid

__all__ = [
    "Row",
    "StudyConfig",
    "StudyData",
    "choose",
    "combination_space",
    "confidence_interval",
    "default_rows",
    "extended_rows",
    "format_table",
    "log_grid",
    "paired_difference",
    "prepare_data",
    "run_row",
    "search",
    "sentences",
    "transfer",
]
