"""Safe YAML loading that remembers where every mapping key came from.

Suite errors must name a line, so mappings are loaded as :class:`Located`
dicts carrying the line of each key. Only the safe loader is used: Python
object tags are rejected, and duplicate keys are an error rather than a
silent overwrite.

Two YAML 1.1 traps are closed here. Aliases can multiply a few lines into
billions of values ("billion laughs"): the expanded size is counted on the
node graph before anything is built, and a suite beyond :data:`MAX_VALUES` is
refused. And YAML 1.1 reads plain ``yes``/``no``/``on``/``off``/``y``/``n`` as
booleans: under the keys of :data:`AS_WRITTEN` (filter values, label names)
and as mapping keys they are read as the strings written (``no`` stays the
country code ``no``); ``true`` and ``false`` stay booleans everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flexharness import files
from flexharness.errors import SuiteError, first_line, short_repr

MAX_VALUES = 100_000   # values of the fully expanded document; a large real suite has a few thousand
AS_WRITTEN = ("where", "label_names")


class Located(dict):
    """A dict that knows the 1-based line of itself and of each of its keys."""

    line: int = 0
    key_lines: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}  # an empty stand-in for a missing section must answer line_of too

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`Located` and reject duplicate keys."""

    path = "<suite>"
    as_written = 0   # > 0 while building a value under a key of AS_WRITTEN


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Located:
    explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # '<<' merges come first; the explicit keys after them override them
    first_explicit = len(node.value) - explicit
    mapping = Located()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    explicit_keys: set[str] = set()
    for position, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)):
            raise SuiteError(loader.path, line, None, f"mapping keys must be plain scalars, got {short_repr(key)}")
        key = key_node.value if isinstance(key, bool) else str(key)  # a key named 'no' or 'on' is that name
        if position >= first_explicit:
            if key in explicit_keys:
                raise SuiteError(loader.path, line, key,
                                 f"duplicate key (first defined on line {mapping.key_lines[key]}); remove one of them")
            explicit_keys.add(key)
        loader.as_written += key in AS_WRITTEN
        try:
            mapping[key] = loader.construct_object(value_node, deep=True)
        finally:
            loader.as_written -= key in AS_WRITTEN
        mapping.key_lines[key] = line
    return mapping


def _construct_bool(loader: _LineLoader, node: yaml.ScalarNode) -> bool | str:
    """``yes``/``no``/``on``/``off``/``y``/``n`` as written where a string is meant; ``true``/``false`` stay bools."""
    if loader.as_written and node.style is None and node.value.lower() not in ("true", "false"):
        return node.value
    return loader.construct_yaml_bool(node)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def _check_size(node: yaml.Node, path: str) -> None:
    """Refuse a document whose aliases expand to more than MAX_VALUES values, or that contains itself."""
    sizes: dict[int, int] = {}
    aliased = []   # non-empty once a node is reached a second time: the document uses aliases

    def size(current: yaml.Node, open_nodes: frozenset[int]) -> int:
        key = id(current)
        if key in sizes:
            aliased.append(key)
            return sizes[key]
        if key in open_nodes:
            raise SuiteError(path, current.start_mark.line + 1, None,
                             "an alias refers to a value that contains it; a suite must be a finite tree of values")
        inner = open_nodes | {key}
        if isinstance(current, yaml.SequenceNode):
            total = 1 + sum(size(child, inner) for child in current.value)
        elif isinstance(current, yaml.MappingNode):
            total = 1 + sum(size(k, inner) + size(v, inner) for k, v in current.value)
        else:
            total = 1
        if total > MAX_VALUES and aliased:
            raise SuiteError(path, current.start_mark.line + 1, None,
                             f"the YAML expands to more than {MAX_VALUES} values through its aliases ('*name'); "
                             "a suite is small plain data: write the values out or nest fewer aliases")
        if total > MAX_VALUES:
            raise SuiteError(path, current.start_mark.line + 1, None,
                             f"the YAML holds more than {MAX_VALUES} values; a suite is small plain data: "
                             "split it into several suites")
        sizes[key] = total
        return total

    size(node, frozenset())


def load_yaml(path: str | Path) -> Any:
    """Parse one YAML file safely; every failure becomes a :class:`SuiteError`."""
    path = Path(path)
    try:
        text = files.read_text(path, files.SUITE_LIMIT)
    except UnicodeDecodeError as exc:
        raise SuiteError(str(path), None, None, f"cannot read the suite file ({exc}); save it as UTF-8") from None
    except OSError as exc:
        raise SuiteError(str(path), None, None,
                         f"cannot read the suite file ({exc.strerror or exc}); check the path and its permissions"
                         ) from None
    return loads_yaml(text, str(path))


def loads_yaml(text: str, path: str) -> Any:
    """Parse YAML text; ``path`` is only used in error messages."""
    loader = None
    try:
        loader = _LineLoader(text)  # the reader already rejects control characters here
        loader.path = path
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, path)
        return loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        tag = f" ({exc.problem})" if exc.problem else ""
        raise SuiteError(
            path, line, None,
            f"unsupported YAML tag{tag}; suites are plain data: use mappings, lists, strings and numbers",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or "syntax error"
        if exc.context and exc.context_mark:
            what += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise SuiteError(path, line, None, f"invalid YAML: {what}; check indentation and quoting") from None
    except yaml.YAMLError as exc:
        reason = first_line(exc, "unreadable")
        raise SuiteError(path, None, None, f"invalid YAML: {reason}; save the suite as plain UTF-8 text") from None
    except RecursionError:
        raise SuiteError(path, None, None, "the YAML nests too deeply to be a suite") from None
    finally:
        if loader is not None:
            loader.dispose()
