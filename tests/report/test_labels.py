"""Class names as figure text: escaped (never math text, never markup), and cut to the room they have with
an ellipsis, measured as matplotlib draws them."""

import pytest

from cnnlab.report import labels, plots

HOSTILE = ["<script>alert(1)</script>", "$x$", "a$b", "\\frac{1}{0}", "$\\undefined$", "$}$", "bell\x07",
           "caf\udce9", "_hidden", "two\nlines", "n" * 60]


def drawn_width_pt(text: str, font_pt: float) -> float:
    """The width matplotlib gives ``text`` once drawn in a figure (at the figures' layout resolution)."""
    figure = plots.new_figure(12, 1)
    artist = figure.text(0, 0.5, text, fontsize=font_pt)
    figure.canvas.draw()
    return artist.get_window_extent(figure.canvas.get_renderer()).width * 72 / figure.dpi


def test_plain_text_escapes_math_shows_bytes_and_cuts_lines():
    assert labels.plain_text("$x$") == r"\$x\$"
    assert labels.plain_text("caf\udce9") == "caf\\xe9"
    assert labels.plain_text("bell\x07") == "bell\\x07"  # visible: two names differing only there stay apart
    assert labels.plain_text("n" * 60, 10) == "n" * 9 + "\u2026"
    assert labels.plain_labels(["_x", "y"]) == [" _x", "y"]


@pytest.mark.parametrize("name", HOSTILE)
def test_every_hostile_name_draws_literally(name):
    text = labels.fit_text(name, 200)
    figure = plots.new_figure(4, 1)
    figure.text(0.01, 0.5, text, fontsize=9)
    plots.figure_to_png(figure)  # a math-text ParseException here would stop a report
    assert "\n" not in text and "\x07" not in text


@pytest.mark.parametrize("font_pt", [9.0, 11.0])
@pytest.mark.parametrize("name", ["american_pit_bull_terrier", "n" * 60, "W" * 40, "i" * 80, "$" * 30 + "x" * 30,
                                  "\u00e9t\u00e9_" * 15])
def test_fit_text_stays_inside_its_width_as_drawn(name, font_pt):
    for width_pt in (40, 90, 150):
        text = labels.fit_text(name, width_pt, font_pt)
        assert drawn_width_pt(text, font_pt) <= width_pt + 0.5  # an escaped \$ is drawn as one $
        if text != labels.plain_text(name):
            assert text.endswith(labels.ELLIPSIS)


def test_fit_text_keeps_prefix_and_suffix_whole():
    text = labels.fit_text("german_shorthaired_pointer_" * 3, 120, 9, prefix="pred: ", suffix=" \u2717")
    assert text.startswith("pred: german") and text.endswith("\u2026 \u2717")
    assert drawn_width_pt(text, 9) <= 120.5
    assert labels.fit_text("cat", 120, 9, prefix="true: ") == "true: cat"  # short names untouched


def test_measured_width_is_the_drawn_width():
    for text in ("true: american_bulldog", "iiiiiiii", "WWWW", "pred: basset_hound \u2717"):
        assert labels.text_width_pt(text, 9) == pytest.approx(drawn_width_pt(text, 9), abs=0.5)


def test_fit_labels_keep_a_leading_underscore_visible_and_cut_each():
    fitted = labels.fit_labels(["_hidden", "x" * 60], 60)
    assert fitted[0] == " _hidden" and fitted[1].endswith(labels.ELLIPSIS)
    assert labels.widest_pt(fitted) <= 60 and labels.widest_pt([]) == 0
