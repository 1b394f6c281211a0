"""The loader is as strict as the shipped JSON Schema on types (issue 15): a quoted number or a
boolean where the schema says integer is an error, never a silent conversion; and every enum
field still takes its values as YAML text."""

from __future__ import annotations

import enum
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, Strict, ValidationError

from gateway.config.models import GatewayConfig, device_model
from protocols.modbus.config import ModbusTcpConnection


def _models(root: type[BaseModel]) -> Iterator[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    stack = [root]
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for field in model.model_fields.values():
            stack.extend(t for t in _types(field.annotation) if _is_model(t))


def _types(annotation: Any) -> Iterator[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _types(get_args(annotation)[0])
    elif origin in (Union, types.UnionType, list, dict, tuple):
        for arg in get_args(annotation):
            yield from _types(arg)
    else:
        yield annotation


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def test_every_config_model_is_strict_and_every_enum_field_takes_text() -> None:
    models = {*_models(GatewayConfig), *_models(device_model())}
    assert len(models) > 15
    lax_enums = []
    for model in models:
        assert model.model_config.get("strict") is True, model.__name__
        for name, field in model.model_fields.items():
            enums = [t for t in _types(field.annotation) if isinstance(t, type)
                     and issubclass(t, enum.Enum)]  # fmt: skip
            lax = any(isinstance(m, Strict) and m.strict is False for m in field.metadata)
            if enums and get_origin(field.annotation) is not dict and not lax:
                lax_enums.append(f"{model.__name__}.{name}")
    assert lax_enums == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("port", "502"), ("unit_id", True), ("timeout_s", "0.5"), ("port", 502.0)],
)
def test_a_value_of_the_wrong_json_type_is_refused(key: str, value: object) -> None:
    with pytest.raises(ValidationError):
        ModbusTcpConnection.model_validate({"protocol": "modbus_tcp", "host": "h", key: value})


def test_text_enums_and_whole_numbers_for_floats_still_load() -> None:
    connection = ModbusTcpConnection.model_validate(
        {"protocol": "modbus_tcp", "host": "h", "port": 502, "timeout_s": 1}
    )
    assert (connection.port, connection.timeout_s) == (502, 1.0)
    gateway = GatewayConfig.model_validate(
        {"site": "s", "gateway_id": "g", "ticketing": {"default_priority": "P1",
                                                      "sla": {"P0": {"respond_min": 1,
                                                                     "resolve_min": 2}}}}
    )  # fmt: skip
    assert str(gateway.ticketing.default_priority) == "P1"
    assert [str(p) for p in gateway.ticketing.sla] == ["P0"]
