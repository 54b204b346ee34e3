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
