"""The demo's closing table and paragraph (tmkt_cli/results/summary.py): every sentence follows from
the numbers in the table."""

from tmkt_cli.results import summary


def row(method, heads, seed, chosen, event=None, static=None, head="event",
        setting="control", fraction=0.001):
    return {"setting": setting, "fraction": fraction, "method": method, "heads": heads,
            "seed": seed, "chosen_test": chosen, "test_event": event if event is not None
            else chosen, "test_static": static, "chosen_head": head}


def demo_rows(seed=42, shift=0.0):
    return [row("event_only", "separate", seed, 55.0 + shift),
            row("kt", "separate", seed, 78.0 + shift, 57.0 + shift, 78.0 + shift, "static"),
            row("kt", "shared", seed, 81.0 + shift),
            row("tmkt", "separate", seed, 53.0 + shift, 53.0 + shift, 52.0 + shift),
            row("tmkt", "shared", seed, 83.0 + shift),
            row("ckd", "separate", seed, 75.0 + shift, 58.0 + shift, 75.0 + shift, "static"),
            row("ckd", "shared", seed, 80.0 + shift),
            row("static_only", "separate", seed, 96.0)]


def test_table_puts_the_layouts_side_by_side_with_the_rules_choice_in_bold():
    text = summary.table(summary.pick(demo_rows()))
    assert "| kt | **78.00** (static; event 57.00, static 78.00) | 81.00 |" in text
    assert "| method | two heads (the papers' layout) | one shared head (recommended) |" in text
    assert "| event_only (one head) | 55.00 | 55.00 |" in text
    assert "| static_only (the SNN on the images; tested on the test images) | 96.00 |" in text


def test_the_paragraph_follows_the_numbers():
    runs = summary.pick(demo_rows())
    text = summary.paragraph(runs, "the control", 42, "see recipes/README.md.")
    assert "event_only reaches 55.0%" in text
    assert "one shared head, the transfer methods score kt +26.0, tmkt +28.0, ckd +25.0" in text
    assert "separate heads, the transfer methods score kt +23.0, tmkt -2.0, ckd +20.0" in text
    assert "one shared head transfers more for every method" in text
    assert "TMKT is 2.0 points above KT with one shared head" in text
    assert "TMKT is 25.0 points below KT with the papers' separate heads" in text
    assert "chose the static head for kt, ckd" in text
    assert "one seed (42)" in text and "no interval" in text
    # the other way round, the words turn with the numbers
    flipped = [dict(r, chosen_test=110 - r["chosen_test"]) if r["method"] != "event_only"
               else r for r in demo_rows()]
    text = summary.paragraph(summary.pick(flipped), "x", 42, "")
    assert "the papers' separate heads transfer more for every method" in text


def test_the_paragraph_says_what_is_missing():
    only = [r for r in demo_rows() if r["method"] == "event_only"]
    assert "No transfer method" in summary.paragraph(summary.pick(only), "x", 42, "")
    assert "event_only has not finished" in summary.paragraph({}, "x", 42, "")


def test_evidence_quotes_intervals_with_n_and_the_words_they_allow():
    rows = [r for seed, shift in ((1, 0.0), (2, 1.0), (3, -1.5))
            for r in demo_rows(seed, shift)]
    text = summary.evidence(rows, "control", 0.001, "docs/benchmark/runs.csv")
    assert "Against event_only, one shared head: kt +26.0 [+26.0, +26.0], ahead (n = 3)" in text
    assert "TMKT against KT: with one shared head +2.0" in text
    assert "Over 3 seeds (docs/benchmark/runs.csv; mean paired difference in points [95% interval]): One shared head against two: kt +3.0" in text
    assert summary.evidence([], "control", 0.001, "X") == "The multi-seed intervals are in X."
