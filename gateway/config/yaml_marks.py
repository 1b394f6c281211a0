"""YAML text -> plain Python objects plus the line of every key and list item.

PyYAML's `safe_load` forgets where things were written, and OT engineers need `file:line` in
every error (DESIGN.md section 4). So the text is composed into nodes with the SafeLoader and
the nodes are turned into dicts, lists and scalars here, recording as we go a map from each
dotted path (`points.2.type`, list indices as numbers) to its 1-based line.

Two deliberate differences from `safe_load`:
- a key written twice in one mapping is a problem (YAML keeps the last one silently, so a
  copy-pasted block would quietly override the first);
- mapping keys are taken as written (`on:`, `no:`, `1:` stay the strings "on", "no", "1"):
  config keys are names, never YAML 1.1 booleans or numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.core.errors import ConfigProblem

PathPart = str | int

_MERGE_TAG = "tag:yaml.org,2002:merge"


def dotted(parts: Iterable[PathPart]) -> str:
    """`("points", 2, "type")` -> `"points.2.type"`; the root is the empty string."""
    return ".".join(str(part) for part in parts)


@dataclass(frozen=True, slots=True)
class MarkedDocument:
    """One parsed YAML file: its data and the line of every key and list item."""

    file: str
    data: object
    lines: Mapping[str, int]

    def line_of(self, path: str) -> int | None:
        """Line of `path`, or of its nearest written ancestor (a missing key -> its parent).

        The empty path is the document itself.
        """
        parts = path.split(".") if path else []
        while True:
            line = self.lines.get(".".join(parts))
            if line is not None:
                return line
            if not parts:
                return None
            parts.pop()


class LinesOnDemand(Mapping[str, int]):
    """The line map of a file's text, built again on first use.

    After a file has passed its schema, its lines are only needed to locate a cross-check
    problem, which is rare. Holding the map of every file until the cross-checks have run
    costs about 30 KB per device file and leaves the heap fragmented once freed (500
    device files added 44 MB of RSS); the text is a single compact string.
    """

    __slots__ = ("_file", "_lines", "_text")

    def __init__(self, text: str, file: str) -> None:
        self._text = text
        self._file = file
        self._lines: Mapping[str, int] | None = None

    def _map(self) -> Mapping[str, int]:
        if self._lines is None:
            document = parse_yaml(self._text, self._file).document
            self._lines = document.lines if document is not None else {}
        return self._lines

    def __getitem__(self, path: str) -> int:
        return self._map()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


def without_data(document: MarkedDocument, text: str) -> MarkedDocument:
    """`document` once validated: no data, and its lines rebuilt from `text` when asked for."""
    return MarkedDocument(document.file, None, LinesOnDemand(text, document.file))


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    """Result of `parse_yaml`: the document (None when the text is not YAML) and the problems."""

    document: MarkedDocument | None
    problems: list[ConfigProblem] = field(default_factory=list)


class _Unreadable(Exception):
    """A node that cannot become a config value; ends the walk of this file."""

    def __init__(self, problem: ConfigProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def parse_yaml(text: str, file: str) -> ParsedYaml:
    """Parse `text` (the content of `file`, used only to label problems).

    Invalid YAML gives one problem located at the YAML error mark and no document. Duplicate
    keys give one problem each, and the document is still returned (the last value wins, as in
    YAML) so that schema validation can report the rest of the file in the same run.
    """
    try:
        # The reader checks for control characters as soon as it is built, so it is inside.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        return ParsedYaml(None, [_yaml_error_problem(exc, file, text)])
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            return ParsedYaml(None, [_yaml_error_problem(exc, file, text)])
        if root is None:
            # An empty file or comments only: the schema reports what is missing.
            return ParsedYaml(MarkedDocument(file, None, {"": 1}))
        builder = _Builder(loader, file)
        try:
            data = builder.build(root, ())
        except _Unreadable as exc:
            return ParsedYaml(None, [*builder.problems, exc.problem])
        return ParsedYaml(MarkedDocument(file, data, builder.lines), builder.problems)
    finally:
        loader.dispose()


class _Builder:
    """Walks composed nodes into plain objects, filling `lines` and `problems`."""

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self._loader = loader
        self._file = file
        self._open: set[int] = set()  # ids of the collections being built (alias cycles)
        self.lines: dict[str, int] = {}
        self.problems: list[ConfigProblem] = []

    def build(self, node: Node, path: tuple[PathPart, ...]) -> object:
        self.lines.setdefault(dotted(path), node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            raise _Unreadable(self._problem(node, path, "alias refers to itself (recursive YAML)"))
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            message = f"unsupported YAML node {type(node).__name__}"
            raise _Unreadable(self._problem(node, path, message))
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: ScalarNode, path: tuple[PathPart, ...]) -> object:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            # For example an unknown tag such as `!include`: the constructor refuses it.
            reason = getattr(exc, "problem", None) or str(exc)
            raise _Unreadable(self._problem(node, path, f"invalid YAML: {reason}")) from exc

    def _mapping(self, node: MappingNode, path: tuple[PathPart, ...]) -> dict[str, object]:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *defaults`: explicit keys may override merged ones
            key = self._key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problems.append(
                    ConfigProblem(
                        self._file,
                        line,
                        dotted((*path, key)),
                        f"duplicate key `{key}` (first at line {first_line[key]})",
                    )
                )
            else:
                first_line[key] = line
        result: dict[str, object] = {}
        for key_node, value_node in self._merged_pairs(node, path):
            key = self._key(key_node, path)
            key_path = (*path, key)
            # The key's own line, so that `unknown key` points at the key, not at its value.
            self.lines[dotted(key_path)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, key_path)
        return result

    def _merged_pairs(
        self, node: MappingNode, path: tuple[PathPart, ...], merging: frozenset[int] = frozenset()
    ) -> list[tuple[Node, Node]]:
        """The mapping's pairs with `<<` merge keys expanded, later pairs winning.

        Same order as PyYAML's `flatten_mapping` (merged pairs first, the first of several
        merged mappings winning, explicit keys last) but without rewriting the nodes, which an
        alias may share with another place in the file.
        """
        merged: list[tuple[Node, Node]] = []
        explicit: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                explicit.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in reversed(sources):
                if not isinstance(source, MappingNode):
                    raise _Unreadable(self._problem(source, path, "`<<` merges mappings only"))
                if id(source) in merging or source is node:
                    raise _Unreadable(self._problem(source, path, "`<<` merges itself"))
                merged.extend(self._merged_pairs(source, path, merging | {id(node)}))
        return merged + explicit

    def _key(self, key_node: Node, path: tuple[PathPart, ...]) -> str:
        if not isinstance(key_node, ScalarNode):
            raise _Unreadable(
                self._problem(key_node, path, "mapping keys must be plain names, not collections")
            )
        return str(key_node.value)

    def _problem(self, node: Node, path: tuple[PathPart, ...], message: str) -> ConfigProblem:
        return ConfigProblem(self._file, node.start_mark.line + 1, dotted(path), message)


def _yaml_error_problem(exc: yaml.YAMLError, file: str, text: str) -> ConfigProblem:
    """One problem for a parse error, at the line PyYAML marks as the culprit."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = _clamp_line(mark.line + 1, text) if mark is not None else None
        reason = exc.problem or exc.context or "cannot parse"
        if exc.context and exc.problem and exc.context_mark is not None:
            if exc.context.startswith("while "):
                # "found unexpected end of stream (while scanning a quoted scalar at line 3)"
                context_line = _clamp_line(exc.context_mark.line + 1, text)
                reason = f"{exc.problem} ({exc.context} at line {context_line})"
            else:
                # "expected a single document in the stream, but found another document"
                reason = f"{exc.context}, {exc.problem}"
        return ConfigProblem(file, line, "", f"invalid YAML: {reason}")
    if isinstance(exc, yaml.reader.ReaderError):
        # A control character or similar: the reader gives a character offset, not a mark.
        line = text.count("\n", 0, exc.position) + 1
        return ConfigProblem(
            file, line, "", f"invalid YAML: unacceptable character #x{exc.character:04x}"
        )
    return ConfigProblem(file, None, "", f"invalid YAML: {exc}")


def _clamp_line(line: int, text: str) -> int:
    """A mark at the end of the stream may sit on the empty line after the last newline; an
    editor jumping there would land past the text, so point at the last written line."""
    last_line = text.count("\n") + (0 if text.endswith("\n") else 1)
    return max(1, min(line, last_line))
