"""The converters' command line, in process, with stub converters (the real ones run end to
end in ``test_convert_grcn.py``)."""
import warnings

import pytest

from recbole_invrl.data.convert import __main__ as cli
from recbole_invrl.data.convert.atomic import ConversionError


class _Summary:
    path = "/out/toy"

    def __str__(self):
        return "toy: 4 users"


@pytest.fixture
def calls(monkeypatch):
    made = []

    def converter(layout):
        def run(src, name, out, progress):
            made.append((layout, src, name, out, progress))
            if name == "bad":
                raise ConversionError("missing train.npy")
            if name == "noisy":
                warnings.warn("3 duplicate rows dropped")
                warnings.warn("3 duplicate rows dropped")  # "always": both shown
            return _Summary()
        return run

    monkeypatch.setattr(cli, "CONVERTERS", {"grcn": converter("grcn"), "mmrec": converter("mmrec")})
    return made


def test_each_layout_runs_its_converter_with_the_options(calls, capsys):
    assert cli.main(["grcn", "--src", "s", "--name", "toy", "--out", "o", "--quiet"]) == 0
    assert cli.main(["mmrec", "--src", "m", "--name", "toy"]) == 0
    assert calls == [("grcn", "s", "toy", "o", False), ("mmrec", "m", "toy", "atomic_data", True)]
    assert capsys.readouterr().out == "toy: 4 users\nwrote /out/toy\n" * 2


def test_a_conversion_error_is_one_line_on_stderr_and_status_2(calls, capsys):
    assert cli.main(["grcn", "--src", "s", "--name", "bad"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: missing train.npy\n" and captured.out == ""


def test_warnings_are_printed_as_plain_lines_every_time(calls, capsys):
    shown = warnings.showwarning
    assert cli.main(["grcn", "--src", "s", "--name", "noisy"]) == 0
    assert capsys.readouterr().err == "warning: 3 duplicate rows dropped\n" * 2
    assert warnings.showwarning is shown  # restored after the run


def test_the_parser_needs_a_layout_and_both_paths(capsys):
    parser = cli.build_parser()
    assert parser.prog == "python -m recbole_invrl.data.convert"
    for argv in ([], ["grcn", "--name", "x"], ["grcn", "--src", "x"], ["other", "--src", "x", "--name", "y"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2
    args = parser.parse_args(["mmrec", "--src", "a", "--name", "b"])
    assert (args.layout, args.src, args.name, args.out, args.quiet) == ("mmrec", "a", "b", "atomic_data", False)
    assert set(cli.HELP) == {"grcn", "mmrec"} and "train.npy" in cli.HELP["grcn"] and "x_label" in cli.HELP["mmrec"]
    with pytest.raises(SystemExit):
        parser.parse_args(["grcn", "--help"])
    help_text = capsys.readouterr().out
    assert "--src SRC" in help_text and "source folder" in help_text and "default: atomic_data" in help_text
    assert "no progress bar" in help_text and cli.HELP["grcn"].split(" (")[0] in help_text


def test_the_help_texts(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    parser = cli.build_parser()
    parser.print_help()
    assert capsys.readouterr().out.splitlines()[2:10] == [
        "Convert a multimedia-recommendation data folder into RecBole atomic files.", "",
        "positional arguments:", "  {grcn,mmrec}",
        "    grcn        GRCN/MMGCN/InvRL release folder (train.npy, val_full.npy,",
        "                test_full.npy, features)",
        "    mmrec       MMRec folder (NAME.inter with x_label, image_feat.npy,",
        "                text_feat.npy)"]
    with pytest.raises(SystemExit):
        parser.parse_args(["mmrec", "--help"])
    assert capsys.readouterr().out.splitlines()[-5:] == [
        "  -h, --help   show this help message and exit", "  --src SRC    source folder",
        "  --name NAME  dataset name (output folder and file stem)",
        "  --out OUT    output root (default: atomic_data)", "  --quiet      no progress bar"]
