"""Error translation stays generic: a second protocol in the union needs no change."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config.pydantic_errors import validation_problems
from gateway.config.yaml_marks import parse_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Tcp(_Strict):
    protocol: Literal["tcp"]
    host: str
    timeout_s: float = 1.0


class _Can(_Strict):
    protocol: Literal["can"]
    channel: str
    bitrate: int = 500_000


class _Device(_Strict):
    id: str
    connection: Annotated[_Tcp | _Can, Field(discriminator="protocol")]
    period_s: float = Field(1.0, gt=0)


def _problems(text: str) -> list[str]:
    document = parse_yaml(text, "d.yaml").document
    assert document is not None
    with pytest.raises(ValidationError) as caught:
        _Device.model_validate(document.data)
    return [str(p) for p in validation_problems(caught.value, _Device, document)]


def test_union_member_errors_drop_the_tag_from_the_path_and_suggest_its_own_keys() -> None:
    assert _problems("id: d\nconnection:\n  protocol: can\n  chanel: can0\n  bitrate: fast\n") == [
        "d.yaml:2: connection.channel: field required",
        "d.yaml:5: connection.bitrate: input should be a valid integer, got 'fast'",
        "d.yaml:4: connection.chanel: unknown key `chanel` (did you mean `channel`?)",
    ]


def test_discriminator_errors_list_every_member() -> None:
    assert _problems("id: d\nconnection:\n  protocol: rtu\n") == [
        "d.yaml:3: connection.protocol: protocol must be one of: tcp, can; got 'rtu'"
    ]
    assert _problems("id: d\nconnection:\n  host: h\n") == [
        "d.yaml:2: connection.protocol: field required; protocol must be one of: tcp, can"
    ]


def test_values_are_named_as_written_in_yaml() -> None:
    assert _problems("id: 7\nconnection: ~\nperiod_s: 0\n") == [
        "d.yaml:1: id: input should be a text string, got 7; put it in quotes",
        "d.yaml:2: connection: expected a mapping of keys, got an empty value",
        "d.yaml:3: period_s: must be greater than 0, got 0",
    ]
