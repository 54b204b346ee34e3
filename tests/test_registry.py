from importlib.metadata import entry_points

import pytest
import torch

from tests.helpers import SMALL_CONFIGS
from vqbench import VQBenchError, create_quantizer, list_quantizers, register_quantizer
from vqbench.quantizer import QUANTIZERS, ExplicitCodebookQuantizer, get_quantizer_class
from vqbench.registry import load_plugin

BUILT_INS = set(SMALL_CONFIGS)


def test_built_ins_are_declared_as_entry_points_and_registered():
    points = entry_points(group=QUANTIZERS.group)
    declared = {ep.name for ep in points}
    assert BUILT_INS <= declared
    # Every built-in has a small configuration, so the shared interface tests cover it.
    assert {ep.name for ep in points if ep.value.startswith("vqbench_quantizers.")} == BUILT_INS
    assert BUILT_INS <= set(list_quantizers())
    for name in BUILT_INS:
        assert type(create_quantizer(name, **SMALL_CONFIGS[name])).name == name


def test_every_registered_quantizer_declares_a_small_configuration_that_builds():
    """The lists of the shared tests come from the registry: a quantizer without a
    `small_config` would silently escape the interface and engine tests."""
    # every quantizer installed through the entry points (plugins a test registers in-process
    # may linger in the registry; they are not part of the package)
    names = sorted({ep.name for ep in entry_points(group=QUANTIZERS.group)})
    assert {"vanilla", "bsq", "ibq", "residual", "product"} <= set(names)
    missing = [n for n in names if get_quantizer_class(n).small_config is None]
    assert not missing, f"declare `small_config` on {missing}"
    assert set(names) <= set(SMALL_CONFIGS)
    for name in names:
        assert type(create_quantizer(name, **SMALL_CONFIGS[name])).name == name


def test_decorator_registers_and_duplicates_fail(clean_registry):
    @register_quantizer("toy_vq")
    class ToyVQ(ExplicitCodebookQuantizer):
        def __init__(self, **params):
            super().__init__(**params)
            self.codes = torch.nn.Parameter(torch.randn(self.codebook_size, self.dim))

        def codebook(self):
            return self.codes

    assert "toy_vq" in list_quantizers()
    assert isinstance(create_quantizer("toy_vq", codebook_size=4, dim=2), ToyVQ)

    class Other(ExplicitCodebookQuantizer):
        pass

    with pytest.raises(VQBenchError, match="'toy_vq' is already registered by .*override=True"):
        register_quantizer("toy_vq")(Other)
    register_quantizer("toy_vq", override=True)(Other)
    assert isinstance(create_quantizer("toy_vq", codebook_size=4, dim=2), Other)


def test_unknown_name_suggests_the_closest_and_lists_all():
    with pytest.raises(VQBenchError) as err:
        create_quantizer("simvqq", codebook_size=8)
    message = str(err.value)
    assert "did you mean 'simvq'?" in message
    assert all(name in message for name in BUILT_INS)
    assert "\n" not in message


@pytest.mark.parametrize(
    "params, expected",
    [
        (dict(codebook_size=-5), "vanilla.codebook_size=-5 is invalid: Input should be greater"),
        (dict(dim="wide"), "vanilla.dim='wide' is invalid: Input should be a valid integer"),
        (dict(widht=3), "vanilla: unknown parameter 'widht'"),
        (dict(codebook_size=10**12), "vanilla with codebook_size=1000000000000, dim=128 needs"),
    ],
)
def test_bad_parameters_fail_in_one_line(params, expected):
    with pytest.raises(VQBenchError) as err:
        create_quantizer("vanilla", **params)
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_bad_plugin_module_fails_clearly():
    with pytest.raises(VQBenchError, match="cannot import plugin module 'no_such_module'"):
        load_plugin("no_such_module")
    with pytest.raises(VQBenchError, match="plugin file 'missing.py' does not exist"):
        load_plugin("missing.py")
