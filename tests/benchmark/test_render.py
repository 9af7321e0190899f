import csv
import io

from recbole_invrl.benchmark.render import csv_table, markdown_table


def test_markdown_table_escapes_pipes_and_joins_lines():
    text = markdown_table(["model", "note"], [["A|B", "line one\nline two"]], title="T", preamble="P")
    lines = text.splitlines()
    assert lines[:4] == ["# T", "", "P", ""]
    assert lines[4:6] == ["| model | note |", "|---|---|"]
    assert lines[6] == "| A\\|B | line one line two |"


def test_markdown_table_without_title_starts_with_the_header():
    assert markdown_table(["a"], [["1"], ["2"]]).splitlines() == ["| a |", "|---|", "| 1 |", "| 2 |"]


def test_csv_table_round_trips_quoted_cells():
    rows = [["x,y", 'say "hi"', 3]]
    parsed = list(csv.reader(io.StringIO(csv_table(["a", "b", "c"], rows))))
    assert parsed == [["a", "b", "c"], ["x,y", 'say "hi"', "3"]]
