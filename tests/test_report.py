from vqbench.report import block_table, independent_groups, match_paper_row, paper_rows, summarise


def record(label, params, psnr=20.0, paper=None):
    return {
        "label": label,
        "codebook_size": 1024,
        "groups": 1,
        "params": params,
        "results": [{}],
        "paper": paper,
        "metrics": {"psnr": summarise([psnr, psnr + 1]), "usage": summarise([0.5])},
    }


def test_estimator_column_appears_when_a_row_uses_another_estimator():
    plain = block_table([record("SimVQ", {})])
    assert "Estimator" not in plain
    table = block_table(
        [
            record("SimVQ", {}),
            record("SimVQ rot", {"estimator": "rotation"}),
            record("SimVQ rad", {"estimator": "radius", "estimator_params": {"radius": "clipped"}}),
        ]
    )
    assert "| Estimator" in table and "rotation" in table
    assert "radius surrogate (clipped; GRIT-style, reconstructed from the abstract)" in table
    assert "20.50 ± 0.71" in table and "50.0" in table  # mean ± std over seeds; usage in %


def test_paper_rows_are_found_and_printed_beside_ours():
    rows = paper_rows("table1.blocks.0")
    row = match_paper_row(rows, {"method": "Group-VQ"})
    assert row["rfid"] == 1.86 and row["codebook_size"] == 65536
    table = block_table([record("Group-VQ", {}, paper=row)])
    assert "(24.37)" in table and "(99.9)" in table
    assert match_paper_row(paper_rows("table4"), {"groups": 64})["psnr"] == 22.16


def test_group_column_follows_the_paper():
    assert independent_groups("group_vq", {"groups": 64}, 65536) == 64
    assert independent_groups("simvq", {}, 65536) == 1
    assert independent_groups("fsq", {}, 64000) == 0
    assert independent_groups("vanilla", {}, 65536) == 65536
