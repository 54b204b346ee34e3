"""Reports name the recipe each row's quantizer used."""

from vqbench.report import RECIPE_NOTE, recipe_of


def test_recipe_of_a_row():
    assert recipe_of({}) == "reference"
    assert recipe_of({"recipe": "shared"}) == "shared"
    assert recipe_of({"recipe": "harmonised"}) == "shared"  # the old name
    assert recipe_of({"quantizer_params": {"codebook_size": 8}}) == "reference"
    assert recipe_of({"quantizer_params": {"recipe": "shared"}}) == "reference, inner shared"
    assert recipe_of({"recipe": "shared", "quantizer_params": {}}) == "shared"
    assert "codebook 1.0 and commitment 0.25" in RECIPE_NOTE
