"""Declared, validated parameters (plugins and config files), with one-line errors.

`format_validation_error` is the one place a pydantic error becomes a message: it names the
owner (a quantizer, an estimator, a config file), the field, the bad value and why, and for an
unknown key suggests the closest allowed one.
"""

from __future__ import annotations

from typing import Any

import pydantic

from vqbench.errors import VQBenchError, did_you_mean


class PluginParams(pydantic.BaseModel):
    """Base of every plugin's parameter model: unknown keys are errors, floats are finite,
    values are frozen."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def allowed_fields(model: type[pydantic.BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at `loc` (for 'did you mean')."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def format_validation_error(
    owner: str,
    err: pydantic.ValidationError,
    model: type[pydantic.BaseModel],
    *,
    joiner: str = ": ",
    noun: str = "key",
) -> str:
    """`owner<joiner>field=value is invalid: why`, or `owner: unknown <noun> 'x'; did you mean`.

    Plugins use `joiner="."` (`simvq.dim=-1 ...`), config files `": "` (`run.yaml: train.steps=0`).
    """
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), allowed_fields(model, loc))
        return f"{owner}: unknown {noun} '{where}';{hint or ' remove it'}"
    msg = first["msg"].removeprefix("Value error, ")
    if not loc:  # a model-level check: its message already names the fields
        return f"{owner}: {msg}"
    if isinstance(first.get("input"), dict):  # a check across fields: the message names them
        return f"{owner}{joiner}{where}: {msg}"
    return f"{owner}{joiner}{where}={first.get('input')!r} is invalid: {msg}"


def validate_params(owner: str, model: type[PluginParams], params: dict[str, Any]):
    """`model(**params)`, or a `VQBenchError` naming `owner`, the field, the value and the fix."""
    try:
        return model(**params)
    except pydantic.ValidationError as err:
        raise VQBenchError(
            format_validation_error(owner, err, model, joiner=".", noun="parameter")
        ) from None
    except TypeError as err:  # params that are not a mapping of names
        raise VQBenchError(
            f"{owner}: parameters must be a mapping of names to values ({err})"
        ) from None
