import csv
import io

import pytest

from recbole_invrl.benchmark.table import (
    IMPROVEMENT_LABEL,
    improvement,
    parse_metrics,
    render_csv,
    render_markdown,
    summarize,
    write_table,
)


def ok(model, seed, p, r, n, seconds=1.0):
    return {"model": model, "seed": seed, "status": "ok", "wall_seconds": seconds, "error": None,
            "test_result": {"precision@10": p, "recall@10": r, "ndcg@10": n}}


def crash(model, seed, error):
    return {"model": model, "seed": seed, "status": "crashed", "wall_seconds": None,
            "test_result": None, "error": error}


def md_row(md: str, name: str) -> list[str]:
    """The cells of the markdown row whose first cell is ``name``."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in\n{md}")


def csv_rows(text: str) -> dict[str, dict[str, str]]:
    return {row["model"]: row for row in csv.DictReader(io.StringIO(text))}


def test_mean_and_sample_std_over_seeds(tmp_path):
    rows = [ok("BPR", 1, 0.1, 0.4, 0.2, 10.0), ok("BPR", 2, 0.2, 0.5, 0.3, 20.0),
            ok("BPR", 3, 0.3, 0.9, 0.4, 30.0)]
    [summary] = summarize(rows)
    assert summary.mean["precision@10"] == pytest.approx(0.2)
    assert summary.std["precision@10"] == pytest.approx(0.1)  # sample std (ddof=1)
    assert summary.mean["recall@10"] == pytest.approx(0.6)
    assert summary.std["recall@10"] == pytest.approx(0.26457513)
    assert summary.seconds == pytest.approx(20.0)
    md_path, csv_path = write_table(rows, tmp_path)
    cells = md_row(md_path.read_text(), "BPR")
    assert cells[1:6] == ["**0.2000 ± 0.1000**", "**0.6000 ± 0.2646**", "**0.3000 ± 0.1000**",
                          "20.0", "3"]
    row = csv_rows(csv_path.read_text())["BPR"]
    assert float(row["P@10 mean"]) == pytest.approx(0.2)
    assert float(row["P@10 std"]) == pytest.approx(0.1)
    assert float(row["N@10 std"]) == pytest.approx(0.1)
    assert float(row["time_s mean"]) == pytest.approx(20.0)
    assert row["seeds_ok"] == "1 2 3" and row["seeds_crashed"] == ""


def test_one_seed_has_no_std():
    [summary] = summarize([ok("Pop", 2020, 0.05, 0.1, 0.07)])
    assert summary.std["ndcg@10"] is None
    assert md_row(render_markdown([summary]), "Pop")[1] == "**0.0500**"
    row = csv_rows(render_csv([summary]))["Pop"]
    assert row["P@10 mean"] == "0.05" and row["P@10 std"] == ""


def test_best_value_of_each_metric_is_bold_and_second_underlined():
    rows = [ok("A", 1, 0.10, 0.50, 0.30), ok("B", 1, 0.30, 0.20, 0.20),
            ok("C", 1, 0.20, 0.40, 0.10)]
    md = render_markdown(summarize(rows))
    a, b, c = md_row(md, "A"), md_row(md, "B"), md_row(md, "C")
    # precision: B best, C second
    assert (b[1], c[1], a[1]) == ("**0.3000**", "<u>0.2000</u>", "0.1000")
    # recall: A best, C second
    assert (a[2], c[2], b[2]) == ("**0.5000**", "<u>0.4000</u>", "0.2000")
    # ndcg: A best, B second
    assert (a[3], b[3], c[3]) == ("**0.3000**", "<u>0.2000</u>", "0.1000")


def test_ties_share_the_bold():
    rows = [ok("A", 1, 0.2, 0.5, 0.3), ok("B", 1, 0.2, 0.4, 0.1)]
    md = render_markdown(summarize(rows))
    assert md_row(md, "A")[1] == md_row(md, "B")[1] == "**0.2000**"


def test_improvement_of_invrl_over_ultragcn_mm(tmp_path):
    rows = [ok("UltraGCNMM", 1, 0.20, 0.50, 0.30), ok("UltraGCNMM", 2, 0.20, 0.50, 0.30),
            ok("InvRL", 1, 0.21, 0.45, 0.35), ok("InvRL", 2, 0.21, 0.45, 0.37),
            ok("BPR", 1, 0.10, 0.30, 0.20)]
    summaries = summarize(rows)
    impv = improvement(summaries)
    assert impv["precision@10"] == pytest.approx(5.0)
    assert impv["recall@10"] == pytest.approx(-10.0)
    assert impv["ndcg@10"] == pytest.approx(20.0)  # mean 0.36 over 0.30
    md_path, csv_path = write_table(rows, tmp_path)
    md = md_path.read_text()
    assert md_row(md, IMPROVEMENT_LABEL)[1:4] == ["+5.00%", "-10.00%", "+20.00%"]
    assert md.rstrip().splitlines()[-1].startswith(f"| {IMPROVEMENT_LABEL} |")  # the last row
    assert md_row(md, "UltraGCN-MM")  # the paper's name for UltraGCNMM
    row = csv_rows(csv_path.read_text())["%Impv."]
    assert row["name"] == "%Impv. of InvRL over UltraGCN-MM"
    assert [float(row[f"{m} mean"]) for m in ("P@10", "R@10", "N@10")] == \
        pytest.approx([5.0, -10.0, 20.0])


def test_no_improvement_row_without_both_models():
    rows = [ok("InvRL", 1, 0.2, 0.5, 0.3), ok("BPR", 1, 0.1, 0.3, 0.2),
            crash("UltraGCNMM", 1, "RuntimeError: x")]
    summaries = summarize(rows)
    assert improvement(summaries) is None
    assert "%Impv." not in render_markdown(summaries) and "%Impv." not in render_csv(summaries)


def test_crashed_models_are_listed_with_their_error(tmp_path):
    rows = [ok("BPR", 1, 0.1, 0.3, 0.2), ok("BPR", 2, 0.1, 0.3, 0.2),
            crash("DGCF", 1, "ValueError: Sample larger than population | x"),
            crash("DGCF", 2, "ValueError: Sample larger than population | x"),
            ok("NGCF", 1, 0.2, 0.2, 0.1, 4.0), crash("NGCF", 2, "killed by SIGKILL (out of memory?)")]
    md_path, csv_path = write_table(rows, tmp_path)
    md = md_path.read_text()
    dgcf = md_row(md, "DGCF")
    assert dgcf[1:6] == ["–", "–", "–", "–", "0/2"]
    assert dgcf[6] == "crashed (seeds 1, 2): ValueError: Sample larger than population \\| x"
    ngcf = md_row(md, "NGCF")
    assert ngcf[5] == "1/2" and ngcf[4] == "4.0"
    assert ngcf[6] == "crashed (seed 2): killed by SIGKILL (out of memory?)"
    assert ngcf[1] == "**0.2000**"  # the finished seed still counts
    rows_csv = csv_rows(csv_path.read_text())
    assert rows_csv["DGCF"]["error"].startswith("crashed (seeds 1, 2): ValueError: Sample larger")
    assert rows_csv["DGCF"]["P@10 mean"] == "" and rows_csv["DGCF"]["seeds_crashed"] == "1 2"
    assert rows_csv["BPR"]["error"] == ""


def test_the_last_record_of_a_run_wins():
    rows = [crash("BPR", 1, "boom"), ok("BPR", 1, 0.1, 0.2, 0.3), ok("BPR", 2, 0.3, 0.2, 0.1),
            crash("BPR", 2, "later crash")]
    [summary] = summarize(rows)
    assert summary.seeds_ok == [1] and summary.crashed == [(2, "later crash")]
    assert summary.mean["precision@10"] == pytest.approx(0.1)


def test_model_order_is_kept(tmp_path):
    rows = [ok("BPR", 1, 0.1, 0.3, 0.2), ok("Pop", 1, 0.1, 0.3, 0.2)]
    names = [s.model for s in summarize(rows, model_order=["Pop", "LightGCN", "BPR"])]
    assert names == ["Pop", "BPR"]


def test_write_table_replaces_both_files_and_leaves_no_temporary_file(tmp_path):
    write_table([ok("BPR", 1, 0.1, 0.3, 0.2)], tmp_path)
    md_path, csv_path = write_table([ok("Pop", 1, 0.1, 0.3, 0.2)], tmp_path, title="Benchmark on x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv", "table.md"]
    assert md_path.read_text().startswith("# Benchmark on x")
    assert "BPR" not in md_path.read_text() and "Pop" in csv_path.read_text()


def test_parse_metrics():
    assert parse_metrics(None) == [("P@10", "precision@10"), ("R@10", "recall@10"),
                                   ("N@10", "ndcg@10")]
    assert parse_metrics("Precision@10, ndcg@20,Hit@5") == [
        ("P@10", "precision@10"), ("N@20", "ndcg@20"), ("Hit@5", "hit@5")]
    for bad in ("Foo@10", "NDCG", "NDCG@0", "NDCG@x", "AUC@10", ""):
        with pytest.raises(ValueError):
            parse_metrics(bad)


def test_display_names_spell_out_overrides_and_the_paper_s_names():
    from recbole_invrl.benchmark.table import display_name

    assert display_name("UltraGCNMM") == "UltraGCN-MM" and display_name("BPR") == "BPR"
    assert display_name("InvRL@invrl_backbone=VBPR@alpha=0.5") == "InvRL (invrl_backbone=VBPR, alpha=0.5)"


def test_a_tuned_entry_is_noted_and_counts_as_the_model_it_was_chosen_for():
    rows = [ok("UltraGCNMM", 1, 0.2, 0.5, 0.4), ok("InvRL@alpha=1", 1, 0.3, 0.5, 0.5),
            crash("InvRL@alpha=1", 2, "boom")]
    summaries = summarize(rows, tuned={"InvRL@alpha=1": ("InvRL", "tuned: best of 3 on valid"),
                                       "Missing": ("X", "y")})
    invrl = summaries[1]
    assert (invrl.tuned_from, invrl.tuning) == ("InvRL", "tuned: best of 3 on valid")
    assert invrl.note() == "tuned: best of 3 on valid; crashed (seed 2): boom"
    assert summaries[0].note() == "" and summaries[0].tuned_from is None
    assert improvement(summaries)["precision@10"] == pytest.approx(50.0)
    md = render_markdown(summaries)
    assert md_row(md, "InvRL (alpha=1)")[6] == "tuned: best of 3 on valid; crashed (seed 2): boom"


def test_improvement_is_blank_where_a_mean_is_missing_or_the_base_is_zero():
    rows = [ok("UltraGCNMM", 1, 0.0, 0.5, 0.4), ok("InvRL", 1, 0.1, 0.6, 0.5)]
    rows[1]["test_result"]["recall@10"] = None
    summaries = summarize(rows)
    assert improvement(summaries) == {"precision@10": None, "recall@10": None, "ndcg@10": pytest.approx(25.0)}
    assert md_row(render_markdown(summaries), IMPROVEMENT_LABEL)[1:4] == ["–", "–", "+25.00%"]
    row = csv_rows(render_csv(summaries))["%Impv."]
    assert (row["P@10 mean"], row["R@10 mean"], row["N@10 mean"]) == ("", "", "25.0")
    only_crashed = summarize([ok("UltraGCNMM", 1, 0.1, 0.5, 0.4), crash("InvRL", 1, "x")])
    assert improvement(only_crashed) is None


def test_the_legend_names_the_metrics_and_every_seed_and_missing_values_show_as_dashes():
    rows = [ok("BPR", 5, 0.1, 0.2, 0.3), crash("Pop", 1, None), ok("LightGCN", 2, 0.3, 0.2, 0.1)]
    rows[2]["wall_seconds"] = None
    summaries = summarize(rows)
    md = render_markdown(summaries, title="Bench")
    assert md.splitlines()[:3] == [
        "# Bench", "",
        "Test-set P@10, R@10, N@10: mean ± sample std over seeds (1, 2, 5); a single seed has no std. Best in "
        "**bold**, second best <u>underlined</u>. Time: mean wall seconds of a run (data, training, test)."]
    assert render_markdown(summaries).splitlines()[0].startswith("Test-set P@10")
    assert md_row(md, "Pop")[1:7] == ["–", "–", "–", "–", "0/1", "crashed (seed 1): unknown error"]
    assert md_row(md, "LightGCN")[4] == "–" and md_row(md, "BPR")[4] == "1.0"
    assert csv_rows(render_csv(summaries))["LightGCN"]["time_s mean"] == ""


def test_ranks_compare_means_at_the_printed_precision_and_long_notes_are_cut():
    rows = [ok("A", 1, 0.30001, 0.1, 0.1), ok("B", 1, 0.30004, 0.2, 0.2), ok("C", 1, 0.2, 0.3, 0.3),
            crash("D", 1, "x" * 400)]
    md = render_markdown(summarize(rows))
    assert md_row(md, "A")[1] == md_row(md, "B")[1] == "**0.3000**" and md_row(md, "C")[1] == "<u>0.2000</u>"
    note = md_row(md, "D")[6]
    assert len(note) == 300 and note.endswith("...") and note.startswith("crashed (seed 1): xxx")
    exact = summarize([crash("E", 1, "y" * (300 - len("crashed (seed 1): ")))])
    assert md_row(render_markdown(exact), "E")[6].endswith("yyy")


def test_metric_lists_drop_repeats_and_blank_entries_and_name_what_is_wrong():
    assert parse_metrics("N@10, ndcg@10,,R@5") == [("N@10", "ndcg@10"), ("R@5", "recall@5")]
    assert parse_metrics(["MRR@3", "map@4"]) == [("MRR@3", "mrr@3"), ("MAP@4", "map@4")]
    with pytest.raises(ValueError, match=r"^unknown metric 'Foo@10': expected NAME@K with NAME one of hit, map, mrr, "
                                         r"ndcg, precision, recall \(or P, R, N\) and K a positive integer$"):
        parse_metrics("P@10,Foo@10")
    with pytest.raises(ValueError, match="^no metric given$"):
        parse_metrics(" , ")


def test_csv_numbers_are_rounded_and_a_nan_is_blank():
    from recbole_invrl.benchmark.table import _num

    assert _num(0.123456789) == "0.123457" and _num(2.5, 3) == "2.5"
    assert _num(None) == "" and _num(float("nan")) == ""


def test_the_whole_markdown_and_csv_of_a_two_model_table():
    """Checked by hand: InvRL over UltraGCN-MM is (0.3 - 0.7) / 0.7 = -57.14% on P@10,
    +20% on R@10, +25% on N@10; times 12.34567 s and 2 s."""
    rows = [ok("UltraGCNMM", 1, 0.7, 0.5, 0.4, 12.34567), ok("InvRL", 1, 0.3, 0.6, 0.5, 2.0)]
    summaries = summarize(rows)
    assert render_markdown(summaries, title="T") == (
        "# T\n\n"
        "Test-set P@10, R@10, N@10: mean ± sample std over seeds (1); a single seed has no std. Best in **bold**, "
        "second best <u>underlined</u>. Time: mean wall seconds of a run (data, training, test).\n\n"
        "| Model | P@10 | R@10 | N@10 | Time (s) | Seeds | Note |\n"
        "|---|---|---|---|---|---|---|\n"
        "| UltraGCN-MM | **0.7000** | <u>0.5000</u> | <u>0.4000</u> | 12.3 | 1 |  |\n"
        "| InvRL | <u>0.3000</u> | **0.6000** | **0.5000** | 2.0 | 1 |  |\n"
        "| %Impv. of InvRL over UltraGCN-MM | -57.14% | +20.00% | +25.00% |  |  |  |\n")
    assert render_csv(summaries).splitlines() == [
        "model,name,seeds_ok,seeds_crashed,P@10 mean,P@10 std,R@10 mean,R@10 std,N@10 mean,N@10 std,time_s mean,error",
        "UltraGCNMM,UltraGCN-MM,1,,0.7,,0.5,,0.4,,12.346,",
        "InvRL,InvRL,1,,0.3,,0.6,,0.5,,2.0,",
        "%Impv.,%Impv. of InvRL over UltraGCN-MM,,,-57.1429,,20.0,,25.0,,,"]


def test_write_table_passes_metrics_order_and_tuning_on(tmp_path):
    rows = [ok("BPR", 1, 0.1, 0.2, 0.3), ok("Pop", 1, 0.2, 0.1, 0.1), ok("Pop@k=1", 1, 0.2, 0.1, 0.1)]
    md_path, csv_path = write_table(rows, tmp_path, metrics=parse_metrics("N@10"), model_order=["Pop", "BPR"],
                                    tuned={"Pop@k=1": ("Pop", "tuned on valid")})
    md = md_path.read_text()
    assert md.index("| Pop |") < md.index("| BPR |") and "| Model | N@10 | Time (s)" in md
    assert md_row(md, "Pop (k=1)")[-1] == "tuned on valid"
    assert csv_path.read_text().splitlines()[0] == "model,name,seeds_ok,seeds_crashed,N@10 mean,N@10 std,time_s mean,error"


def test_two_seeds_have_a_std_one_k_is_a_cutoff_and_a_missing_model_gives_no_improvement():
    [summary] = summarize([ok("BPR", 1, 0.1, 0.2, 0.3), ok("BPR", 2, 0.3, 0.2, 0.3)])
    assert summary.std["precision@10"] == pytest.approx(0.1414213562)
    assert parse_metrics("Hit@1") == [("Hit@1", "hit@1")]
    assert improvement(summarize([ok("UltraGCNMM", 1, 0.1, 0.2, 0.3)])) is None
    assert improvement(summarize([ok("InvRL", 1, 0.1, 0.2, 0.3)])) is None
