"""Reports of composite quantizers say which usage their Usage cell shows."""

from vqbench.report import Row, block_table, composite_notes, summarise


def composite_row(label="RQ", product_usage=0.0125):
    r = Row(0, label, label, None, "residual", {}, "fp", None)
    r.results = [
        {
            "codebook_size": 65536,
            "independent_groups": 512,
            "index_sizes": [256, 256],
            "usage": 0.75,
            "usage_per_index": [1.0, 0.5],
            "product_usage": product_usage,
        }
    ]
    r.summarise()
    return r


def plain_row():
    r = Row(0, "VQ", "VQ", None, "vanilla", {}, "fp", None)
    r.results = [{"codebook_size": 1024, "independent_groups": 1024, "usage": 0.5}]
    r.metrics = {"usage": summarise([0.5])}
    return r


def test_composite_rows_show_their_factors_and_mark_the_per_index_usage():
    table = block_table([plain_row(), composite_row()])
    assert "| 65,536 (256 x 256)" in table and "| 1,024 " in table
    assert "75.0 †" in table and "50.0 †" not in table
    assert composite_row().metrics["product_usage"]["mean"] == 0.0125


def test_the_note_names_the_definition_and_gives_the_product_usage():
    assert composite_notes([plain_row()]) == []
    (note,) = composite_notes([plain_row(), composite_row()])
    assert "mean over the indices" in note and "`product_usage`" in note
    assert "RQ: 1.2" in note  # percent, one decimal
