"""YAML with node marks: plain data, the line of every key and item, and what we refuse."""

from __future__ import annotations

from gateway.config.yaml_marks import dotted, parse_yaml


def _parse(text: str):
    result = parse_yaml(text, "f.yaml")
    return result.document, [str(p) for p in result.problems]


def test_records_the_line_of_every_key_and_list_item() -> None:
    document, problems = _parse(
        "site: a\npoints:\n  - name: t\n    address: 1\n  - {name: u, address: 2}\n"
    )
    assert problems == []
    assert document is not None
    assert document.data == {
        "site": "a",
        "points": [{"name": "t", "address": 1}, {"name": "u", "address": 2}],
    }
    assert document.lines == {
        "": 1,
        "site": 1,
        "points": 2,
        "points.0": 3,
        "points.0.name": 3,
        "points.0.address": 4,
        "points.1": 5,
        "points.1.name": 5,
        "points.1.address": 5,
    }


def test_line_of_a_missing_key_is_its_parent_mapping() -> None:
    document, _ = _parse("a: 1\nconnection:\n  host: h\n")
    assert document is not None
    assert document.line_of("connection.port") == 2
    assert document.line_of("nothing.here") == 1


def test_duplicate_key_is_a_problem_and_the_last_value_is_kept() -> None:
    document, problems = _parse("a: 1\nb:\n  c: 2\n  c: 3\n")
    assert problems == ["f.yaml:4: b.c: duplicate key `c` (first at line 3)"]
    assert document is not None and document.data == {"a": 1, "b": {"c": 3}}


def test_invalid_yaml_gives_the_line_of_the_error_mark() -> None:
    document, problems = _parse("a: 1\nb:\n  c: 2\n   d: 3\n")
    assert document is None
    assert problems == ["f.yaml:4: <root>: invalid YAML: mapping values are not allowed here"]


def test_error_at_end_of_stream_points_at_the_last_written_line() -> None:
    _, problems = _parse("a: 1\nb: [\n")
    assert problems[0].startswith("f.yaml:2: ")


def test_merge_keys_expand_and_explicit_keys_override_without_duplicate_error() -> None:
    document, problems = _parse(
        "defaults: &d {timeout_s: 0.5, port: 502}\nconnection:\n  <<: *d\n  port: 5020\nagain: *d\n"
    )
    assert problems == []
    assert document is not None
    assert document.data["connection"] == {"timeout_s": 0.5, "port": 5020}
    assert document.lines["connection.port"] == 4
    assert document.lines["connection.timeout_s"] == 1  # where the merged value was written


def test_keys_are_names_as_written_not_yaml_booleans_or_numbers() -> None:
    document, _ = _parse("on: 1\n1: 2\nno: yes\n")
    assert document is not None
    assert document.data == {"on": 1, "1": 2, "no": True}


def test_recursive_alias_is_refused() -> None:
    document, problems = _parse("a: &x [*x]\n")
    assert document is None
    assert problems == ["f.yaml:1: a.0: alias refers to itself (recursive YAML)"]


def test_unknown_tag_and_control_character_are_located() -> None:
    assert _parse("a: 1\nb: !include other.yaml\n")[1] == [
        "f.yaml:2: b: invalid YAML: could not determine a constructor for the tag '!include'"
    ]
    assert _parse("a: 1\nb: \x07\n")[1] == [
        "f.yaml:2: <root>: invalid YAML: unacceptable character #x0007"
    ]


def test_empty_document_has_no_data() -> None:
    document, problems = _parse("# only a comment\n")
    assert problems == [] and document is not None and document.data is None


def test_dotted_uses_numbers_for_list_indices() -> None:
    assert dotted(("points", 2, "type")) == "points.2.type"
    assert dotted(()) == ""
