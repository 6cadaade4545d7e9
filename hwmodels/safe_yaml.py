"""YAML a user gives (specs, sweep files, deployments files, dashboard uploads), loaded in bounded work.

`yaml.safe_load` builds no objects from tags, but it still lets a small file cost without bound:
- an alias bomb ("billion laughs": `a: &a [x, x, ...]`, `b: &b [*a, *a, ...]`, nine levels) is a few hundred
  bytes that stand for 10^9 values; the loader shares them by reference, then validation and our own code walk
  the expansion;
- a duplicate key silently keeps the last value, although a spec refuses unknown keys;
- 1,000 nested brackets exhaust Python's recursion in the composer.

`Loader` (yaml.SafeLoader's composer, constructor and resolver over libyaml's parser, or over PyYAML's own when
libyaml is absent: `PyLoader`) checks each of these while it composes the node graph, before anything is
constructed or expanded: at most `Limits.aliases` alias uses, at most `Limits.nodes` nodes once every alias is
expanded, nesting at most `Limits.depth` levels, no key twice in one mapping (merge keys `<<` may still
override), no alias inside its own anchor. `read_text` caps the bytes read. Every refusal, and every YAML
syntax error, is one InputError naming the file and line, with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from hwmodels.errors import InputError, excerpt, one_line

try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML without libyaml: the pure-Python parser
    CParser = None

_MERGE = "tag:yaml.org,2002:merge"
_FLATTEN = "flatten it: a spec is at most 4 levels deep (routing.decode.fit[0])"
_PARSER_DEPTH_LIMIT = "exceeded maximum nesting depth"  # libyaml's own refusal (PyYAML 6.0.4's wheels)


@dataclass(frozen=True)
class Limits:
    """What one YAML document may hold. USER bounds a spec, sweep or deployments file with room to spare: a spec
    is about 40 nodes, the published deployments file (catalogs/published/deployments.yaml) 6 KB, 340 nodes,
    4 levels deep and without an alias; a sweep of 10,000 values in one list (moeplan.sweep_file.MAX_POINTS) is
    10,000 nodes. libyaml composes 20,000 nodes in a fraction of a second."""

    aliases: int = 100  # alias uses (*name), each counted wherever it appears
    nodes: int = 20_000  # scalars, sequences and mappings, every alias counted as the nodes it stands for
    depth: int = 32  # nested sequences and mappings
    bytes: int = 2**20  # 1 MiB of text


USER = Limits()
CATALOG = Limits(aliases=1_000, nodes=1_000_000, bytes=2**26)  # catalogs/: package data, checked the same way


class _Bounded(Composer):
    """The composer's checks (shared by the libyaml and the pure-Python loader)."""

    def _start(self, name: str, limits: Limits) -> None:
        self.name, self.limits = name, limits
        self._aliases, self._depth, self._nodes = 0, 0, 0

    def _refuse(self, node_or_mark, problem: str, fix: str) -> InputError:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        return InputError(f"{self.name} line {mark.line + 1}", problem, fix)

    def _count(self, nodes: int, at) -> None:
        self._nodes += nodes
        if self._nodes > self.limits.nodes:
            raise self._refuse(at, f"stands for more than {self.limits.nodes:,} values (every alias expanded)",
                               "write the values out, without aliases that repeat other aliases")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > self.limits.aliases:
                raise self._refuse(event, f"more than {self.limits.aliases} YAML aliases (*{excerpt(event.anchor)[1:-1]})",
                                   "write the values out: a spec or deployments file needs few aliases, if any")
            node = super().compose_node(parent, index)
            if not hasattr(node, "expanded"):
                raise self._refuse(event, f"alias *{excerpt(event.anchor)[1:-1]} is used inside its own anchor",
                                   "a value cannot contain itself: write it out")
            self._count(node.expanded, event)
            return node
        self._count(1, event)
        self._depth += 1
        try:
            if self._depth > self.limits.depth:
                raise self._refuse(event, f"nested deeper than {self.limits.depth} levels", _FLATTEN)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        node.expanded = 1 + _children(node)
        return node

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                name = (key.tag, key.value)
                if name in first:
                    raise self._refuse(key, f"key {excerpt(key.value)} appears twice in one mapping (first at line "
                                       f"{first[name] + 1})", "keep one: a repeated key would silently replace the first")
                first[name] = key.start_mark.line
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (InputError, yaml.YAMLError):
            raise
        except (ValueError, OverflowError) as e:  # int('9' * 5000), a timestamp in month 13
            raise self._refuse(node, f"value {excerpt(node.value) if isinstance(node, ScalarNode) else ''} cannot be "
                               f"read ({str(e).split(';')[0]})", "write the number or date in an ordinary form") from None


class PyLoader(Reader, Scanner, Parser, _Bounded, SafeConstructor, Resolver):
    """The checks on PyYAML's pure-Python parser (about ten times slower than libyaml's)."""

    def __init__(self, stream, name: str = "YAML", limits: Limits = USER):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Bounded.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._start(name, limits)

    def fetch_flow_collection_start(self, TokenClass):
        """The scanner's `[` and `{`: refused past the depth limit here, before it looks ahead for a simple key
        across every open bracket (100,000 of them take it seconds)."""
        if self.flow_level >= self.limits.depth:
            raise self._refuse(self.get_mark(), f"nested deeper than {self.limits.depth} levels", _FLATTEN)
        super().fetch_flow_collection_start(TokenClass)


if CParser is not None:
    class Loader(CParser, _Bounded, SafeConstructor, Resolver):
        """The checks on libyaml's events (libyaml reads nesting lazily: a million `[` cost it nothing)."""

        get_single_node, compose_document = _Bounded.get_single_node, _Bounded.compose_document
        check_node, get_node = _Bounded.check_node, _Bounded.get_node

        def __init__(self, stream, name: str = "YAML", limits: Limits = USER):
            CParser.__init__(self, stream)
            _Bounded.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start(name, limits)
else:  # PyYAML built without libyaml
    Loader = PyLoader  # type: ignore[misc]


def _children(node) -> int:
    if isinstance(node, SequenceNode):
        return sum(child.expanded for child in node.value)
    if isinstance(node, MappingNode):
        return sum(key.expanded + value.expanded for key, value in node.value)
    return 0


def read_text(path: str | Path, field: str, missing_fix: str, limits: Limits = USER) -> str:
    """The UTF-8 text of a file of at most `limits.bytes`; a missing, unreadable or oversized file is one InputError
    on `field` (missing: with `missing_fix`)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limits.bytes + 1)
    except FileNotFoundError:
        raise InputError(field, f"no file '{path}'", missing_fix) from None
    except (OSError, ValueError) as e:  # a folder, no permission, a path with a NUL character
        raise InputError(field, f"cannot read '{path}': {e}", "check the path") from None
    if len(data) > limits.bytes:
        raise InputError(field, f"'{path}' is larger than {limits.bytes:,} bytes", "give the YAML file itself "
                         "(a spec is under 1 KB, the published deployments file 6 KB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(field, f"cannot read '{path}': not UTF-8 text (byte {e.start})", "save it as UTF-8 text") from None


def load(text: str, name: str, limits: Limits = USER, loader_class: type = Loader) -> Any:
    """The one document in `text`, in bounded work; `name` (the file) heads every error. `loader_class`: PyLoader
    to use the pure-Python parser."""
    if len(text) > limits.bytes:
        raise InputError(name, f"is longer than {limits.bytes:,} characters", "give the YAML file itself")
    loader = loader_class(text, name, limits)
    try:
        return loader.get_single_data()
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        raise InputError(f"{name} line {mark.line + 1}" if mark else name, one_line(str(e.problem), 200),
                         "remove the tag: moeplan reads plain YAML values only") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if _PARSER_DEPTH_LIMIT in str(getattr(e, "problem", "")):
            # the libyaml of PyYAML 6.0.4's wheels refuses the 1,000th open bracket while it scans ahead, before the
            # composer sees the 33rd: the same refusal as the composer's
            raise InputError(f"{name} line {mark.line + 1}" if mark else name,
                             f"nested deeper than {limits.depth} levels", _FLATTEN) from None
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(name, f"malformed YAML{where}: {getattr(e, 'problem', None) or e}", "fix the YAML syntax") from None
    except InputError:
        raise
    except (ValueError, OverflowError, RecursionError) as e:  # what construct_object did not catch
        raise InputError(name, f"a value cannot be read ({e})", "write the number or date in an ordinary form") from None
    finally:
        loader.dispose()
