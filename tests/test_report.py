import pytest

from vqbench import create_quantizer
from vqbench.report import Row, block_table, match_paper_row, paper_rows, summarise


def row(label, params, psnr=20.0, paper=None, groups=1):
    r = Row(0, label, label, None, "simvq", params, "fp", paper)
    r.results = [{"codebook_size": 1024, "independent_groups": groups}]
    r.metrics = {"psnr": summarise([psnr, psnr + 1]), "usage": summarise([0.5])}
    return r


def test_estimator_column_appears_when_a_row_uses_another_estimator():
    plain = block_table([row("SimVQ", {})])
    assert "Estimator" not in plain
    table = block_table(
        [
            row("SimVQ", {}),
            row("SimVQ rot", {"estimator": "rotation"}),
            row("SimVQ rad", {"estimator": "radius", "estimator_params": {"radius": "clipped"}}),
        ]
    )
    assert "| Estimator" in table and "rotation" in table
    assert "radius surrogate (clipped; GRIT-style, reconstructed from the abstract)" in table
    assert "20.50 ± 0.71" in table and "50.0" in table  # mean ± std over seeds; usage in %


def test_paper_rows_are_found_and_printed_beside_ours():
    rows = paper_rows("table1.blocks.0")
    paper = match_paper_row(rows, {"method": "Group-VQ"})
    assert paper["rfid"] == 1.86 and paper["codebook_size"] == 65536
    table = block_table([row("Group-VQ", {}, paper=paper, groups=64)])
    assert "(24.37)" in table and "(99.9)" in table and "| 64 " in table
    assert match_paper_row(paper_rows("table4"), {"groups": 64})["psnr"] == 22.16


def test_group_column_is_what_the_quantizer_says_of_itself():
    """The paper's 'Group' column: independently updated groups of codes."""
    assert (
        create_quantizer("group_vq", codebook_size=256, dim=8, groups=64).independent_groups() == 64
    )
    assert create_quantizer("simvq", codebook_size=256, dim=8).independent_groups() == 1
    assert create_quantizer("vqgan_lc", codebook_size=256, dim=8).independent_groups() == 1
    assert create_quantizer("fsq", levels=[4, 4], dim=8).independent_groups() == 0
    assert create_quantizer("vanilla", codebook_size=256, dim=8).independent_groups() == 256


def test_throughput_leaves_out_the_warm_up_window_and_averages_seeds(tmp_path):
    import json

    from vqbench.report import throughput, throughput_table

    def run(name, windows):
        folder = tmp_path / name
        folder.mkdir()
        lines = [json.dumps({"step": 10 * (i + 1), **w}) for i, w in enumerate(windows)]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return str(folder)

    warm = {"images_per_s": 10.0, "step_ms": 3200.0, "quantizer_ms": 900.0}
    a = run("a", [warm, {"images_per_s": 400.0, "step_ms": 80.0, "quantizer_ms": 4.0},
                  {"images_per_s": 200.0, "step_ms": 160.0, "quantizer_ms": 8.0}])  # fmt: skip
    b = run("b", [warm, {"images_per_s": 320.0, "step_ms": 100.0, "quantizer_ms": 5.0}])
    result = throughput([a, b])
    # Run a: 2 windows at 400 and 200 images/s -> 2 / (1/400 + 1/200) = 266.67; run b: 320.
    assert result["images_per_s"] == pytest.approx((800 / 3 + 320) / 2)
    assert result["step_ms"] == pytest.approx((120 + 100) / 2)
    assert result["quantizer_ms"] == pytest.approx((6 + 5) / 2)
    assert result["quantizer_share"] == pytest.approx(5.5 / 110)
    assert throughput([run("untimed", [{"images_per_s": 5.0}])]) is None
    r = row("SimVQ", {})
    r.throughput = result
    assert "| SimVQ    | 293.3      | 110.0         | 5.50" in throughput_table([r])


def test_the_settings_line_names_a_schedule_other_than_the_constant_default():
    from vqbench.config import ScheduleConfig
    from vqbench.report import schedule_words

    assert schedule_words(ScheduleConfig()) == ""
    cosine = ScheduleConfig(kind="cosine", warmup_steps=5, min_lr_ratio=0.1)
    assert schedule_words(cosine) == " (cosine, 5 warmup steps, down to 0.1 of it)"
    warm = ScheduleConfig(kind="linear_warmup", warmup_steps=3)
    assert schedule_words(warm) == " (linear warmup, 3 warmup steps)"
