"""`Predictions` as text: a table for people, CSV and JSON for programs, and the list of skipped files.

- table: one line per image, the image then its top-k classes as ``class (97.3%)``, columns aligned.
- csv: one row per image and rank, ``image,rank,class,probability`` (rank 1 the most probable), the
  probability in full float32 precision: one shape for any k, ready for a spreadsheet filter or
  ``pandas.read_csv`` (``df[df["rank"] == 1]`` is the top-1 table).
- json: a list with one object per image, ``{"image": ..., "predictions": [{"class": ..., "probability":
  ...}, ...]}``, most probable first.

Class names and file names are data: written as they are (CSV quoting, JSON strings), never formatted
or interpreted; a file name that is not valid UTF-8 shows its odd bytes as ``\\udcXX`` escapes, and the
table also escapes control characters (a newline in a name would break its lines).
"""

from __future__ import annotations

import csv
import io
import json

from cnnlab.analysis.predict import Predictions

FORMATS = ("table", "csv", "json")
CSV_COLUMNS = ["image", "rank", "class", "probability"]
COLUMN_GAP = "  "
MAX_SKIPPED_SHOWN = 50  # more are counted, not listed (a folder of 10,000 damaged files needs no 10,000 lines)


def format_predictions(predictions: Predictions, top_k: int, output_format: str) -> str:
    """``predictions`` as a table, CSV or JSON text (ending in a newline), ``top_k`` classes per image."""
    if output_format not in FORMATS:
        raise ValueError(f"output_format must be one of {FORMATS}, not {output_format!r}")
    ranked = predictions.top_k(top_k)
    if output_format == "csv":
        return csv_text(predictions.sources, ranked)
    if output_format == "json":
        return json_text(predictions.sources, ranked)
    return table_text(predictions.sources, ranked)


def table_text(sources: list[str], ranked: list[list[tuple[str, float]]]) -> str:
    """Aligned columns: image, top-1, top-2, ... with each class as ``name (p%)``."""
    k = max((len(classes) for classes in ranked), default=0)
    header = ["image", *(f"top-{rank}" for rank in range(1, k + 1))]
    rows = [[printable(source), *(f"{printable(name)} ({probability:.1%})" for name, probability in classes)]
            for source, classes in zip(sources, ranked)]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [COLUMN_GAP.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"


def csv_text(sources: list[str], ranked: list[list[tuple[str, float]]]) -> str:
    """One row per image and rank: image, rank, class, probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for source, classes in zip(sources, ranked):
        for rank, (name, probability) in enumerate(classes, start=1):
            writer.writerow([safe_text(source), rank, safe_text(name), repr(probability)])
    return buffer.getvalue()


def json_text(sources: list[str], ranked: list[list[tuple[str, float]]]) -> str:
    """A list of ``{"image", "predictions": [{"class", "probability"}, ...]}`` objects."""
    objects = [{"image": safe_text(source),
                "predictions": [{"class": safe_text(name), "probability": probability}
                                for name, probability in classes]}
               for source, classes in zip(sources, ranked)]
    return json.dumps(objects, indent=2, ensure_ascii=False) + "\n"


def skipped_lines(skipped: list[tuple[str, str]]) -> list[str]:
    """``skipped photo.tif: not a PNG, ...`` for each skipped file (the first `MAX_SKIPPED_SHOWN`), then a count."""
    lines = [f"skipped {printable(path)}: {printable(why)}" for path, why in skipped[:MAX_SKIPPED_SHOWN]]
    if len(skipped) > MAX_SKIPPED_SHOWN:
        lines.append(f"... and {len(skipped) - MAX_SKIPPED_SHOWN} more skipped files")
    return lines


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates (the undecodable bytes of a file name) as ``\\udcXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(text: str) -> str:
    """`safe_text`, with control characters (newlines, tabs, escapes) written as backslash escapes too."""
    text = safe_text(text)
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


__all__ = ["CSV_COLUMNS", "FORMATS", "csv_text", "format_predictions", "json_text", "printable", "safe_text",
           "skipped_lines", "table_text"]
