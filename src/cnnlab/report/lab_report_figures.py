"""A zoo model's run beside the lab report's own figure, in one wording for every report: the run report's
"Against the lab report" section, the seeds report's, and the comparison's "Recipe" column.

It reads only what training recorded in metrics.json (`cnnlab.models.zoo.recipe_check`): the report's figure
(``reported_accuracy``, ``reported_accuracy_kind``, ``reported_dataset``, ``source``) and
``recipe_differences``, each setting in which the run's recipe differed from the report's (an empty list:
none). Runs made before that list was recorded say so; the zoo is never looked up again here."""

from __future__ import annotations

from typing import Any, Mapping

from cnnlab.models.zoo.recipe_check import is_dataset_copy, short_difference
from cnnlab.report.document import Block, Callout, Heading, Paragraph, Table, format_percent, format_value

SECTION_TITLE = "Against the lab report"
FOLLOWED_CELL, UNRECORDED_CELL = "report's", "not recorded"
CELL_DIFFERENCES = 4  # differences a table cell names; the rest are counted


def recipe_differences(metrics: Mapping[str, Any]) -> list[str] | None:
    """The recorded differences from the report's recipe ([]: none); None when they were not recorded."""
    differences = metrics.get("recipe_differences")
    if not isinstance(differences, list):
        return None
    return [str(difference) for difference in differences]


def _split_copies(differences: list[str]) -> tuple[bool, list[str]]:
    """(whether the run used a copy of the report's dataset, the differences other than that)."""
    return (any(is_dataset_copy(difference) for difference in differences),
            [difference for difference in differences if not is_dataset_copy(difference)])


def recipe_sentence(metrics: Mapping[str, Any], subject: str = "This run") -> str:
    """Whether ``subject`` followed the report's recipe, as a sentence naming each difference. A copy of the
    report's dataset (cifar10-jpeg for cifar10) is said apart: the recipe is the report's, the pixels lost detail."""
    differences = recipe_differences(metrics)
    if differences is None:
        return f"Whether {_lowered(subject)} followed the report's recipe was not recorded."
    on_copy_dataset, others = _split_copies(differences)
    on_copy = (f" on {metrics.get('dataset') or 'a copy of its dataset'}, a copy of the report's dataset that "
               "lost some detail (expect a slightly lower accuracy)") if on_copy_dataset else ""
    if not others:
        return f"{subject} followed the report's recipe{on_copy}."
    return (f"{_possessive(subject)} recipe differs from the report's: {'; '.join(others)}; the two figures "
            "are not comparable.")


def differs_from_recipe(metrics: Mapping[str, Any]) -> bool:
    """Whether the recorded recipe differs from the report's in more than the dataset's storage."""
    return bool(_split_copies(recipe_differences(metrics) or [])[1])


def recipe_cell(metrics: Mapping[str, Any]) -> str:
    """The recipe in a table cell: "report's", "differs: epochs 1 (report 20)", "not recorded", or "n/a"
    for a run with no reported figure."""
    if metrics.get("reported_accuracy") is None:
        return "n/a"
    differences = recipe_differences(metrics)
    if differences is None:
        return UNRECORDED_CELL
    on_copy_dataset, differences = _split_copies(differences)
    if not differences:
        return FOLLOWED_CELL + (f" (on {metrics.get('dataset')})" if on_copy_dataset else "")
    shown = "; ".join(short_difference(difference) for difference in differences[:CELL_DIFFERENCES])
    more = len(differences) - CELL_DIFFERENCES
    return f"differs: {shown}" + (f"; and {more} more" if more > 0 else "")


def format_reported(value: Any, kind: Any) -> str:
    """The lab report's own figure, a fraction (0.9196) or a percentage (91.96),
    with what it measured (test or validation accuracy) when known."""
    if value is None:
        return "n/a"
    text = format_percent(value) if float(value) <= 1 else f"{float(value):.2f}%"
    return f"{text} ({kind})" if kind else text


def against_report_section(metrics: Mapping[str, Any], figure: str, subject: str = "This run") -> list[Block]:
    """For a run (or the runs of a multi-seed folder: ``subject`` "These runs") of a model with a reported
    figure: the report's figure beside ``figure`` (the test accuracy, or its mean ± std over the seeds),
    what each measured, and whether the recipe was the report's. [] without a reported figure."""
    if metrics.get("reported_accuracy") is None:
        return []
    kind = metrics.get("reported_accuracy_kind")
    source = f"The lab report ({metrics['source']})" if metrics.get("source") else "The lab report"
    table = Table(["", "Accuracy", "Measured on", "Dataset"], [
        [source, format_reported(metrics["reported_accuracy"], None), f"{kind} images" if kind else "n/a",
         format_value(metrics.get("reported_dataset"))],
        [subject, figure, "test images", format_value(metrics.get("dataset"))],
    ], row_headers=True)
    blocks: list[Block] = [Heading(SECTION_TITLE), table]
    if kind == "validation":
        blocks.append(Paragraph(f"The report's figure is a validation accuracy; {_lowered(_possessive(subject))} "
                                "is a test accuracy, measured on other images."))
    sentence = recipe_sentence(metrics, subject)
    blocks.append(Callout(sentence, "warning") if differs_from_recipe(metrics) else Paragraph(sentence))
    return blocks


def _possessive(subject: str) -> str:
    return f"{subject}'" if subject.endswith("s") else f"{subject}'s"


def _lowered(subject: str) -> str:
    return subject[:1].lower() + subject[1:]
