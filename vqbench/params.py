"""Declared, validated parameters of plugins (quantizers, estimators), with one-line errors."""

from __future__ import annotations

from typing import Any

import pydantic

from vqbench.errors import VQBenchError


class PluginParams(pydantic.BaseModel):
    """Base of every plugin's parameter model: unknown keys are errors, values are frozen."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


def format_validation_error(owner: str, err: pydantic.ValidationError) -> str:
    """`owner.field=value is invalid: why`, or `owner: unknown parameter 'x'`, in one line."""
    first = err.errors()[0]
    field_name = ".".join(str(p) for p in first["loc"]) or "parameters"
    if first["type"] == "extra_forbidden":
        return f"{owner}: unknown parameter '{field_name}'"
    msg = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a model-level check: its message already names the fields
        return f"{owner}: {msg}"
    return f"{owner}.{field_name}={first.get('input')!r} is invalid: {msg}"


def validate_params(owner: str, model: type[PluginParams], params: dict[str, Any]):
    """`model(**params)`, or a `VQBenchError` naming `owner`, the field, the value and the fix."""
    try:
        return model(**params)
    except pydantic.ValidationError as err:
        raise VQBenchError(format_validation_error(owner, err)) from None
