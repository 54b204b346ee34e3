"""VQGAN-LC's k-means against the reference's `kmeans_pytorch.kmeans` (fixtures:
tools/reference_fixtures/vqgan_lc.py): from the same starting features, full-batch Lloyd to
`tol=1e-4` reaches the same centres and labels."""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture
from vqbench.kmeans import kmeans, lloyd


def test_lloyd_reproduces_the_references_kmeans():
    fixture = load_fixture("vqgan_lc_kmeans")
    assert fixture.meta["repository"] == "zh460045050/VQGAN-LC"
    centres = lloyd(
        fixture["features"],
        fixture.settings["clusters"],
        tol=fixture.settings["tol"],
        initial=fixture["start"],
    )
    assert_close(centres, fixture["centres"], "centres", rtol=1e-5, atol=1e-5)
    labels = torch.cdist(fixture["features"], centres).argmin(1)
    assert torch.equal(labels, fixture["labels"])


def test_a_capped_lloyd_or_minibatch_kmeans_departs():
    fixture = load_fixture("vqgan_lc_kmeans")
    k = fixture.settings["clusters"]
    capped = lloyd(fixture["features"], k, initial=fixture["start"], max_iterations=2)
    with pytest.raises(AssertionError):
        assert_close(capped, fixture["centres"], "centres", rtol=1e-5, atol=1e-5)
    minibatch = kmeans(fixture["features"], k, seed=0)  # k-means++ and another order of codes
    with pytest.raises(AssertionError):
        assert_close(minibatch, fixture["centres"], "centres", rtol=1e-5, atol=1e-5)
