"""YAML with lines: manifest text -> document nodes -> values and field lines.

Owns reading YAML safely: `compose_documents(text, filename)` splits a file
into its non-empty documents (a syntax error becomes a located
`ManifestError`), and `Composer.build` turns one document's node tree into
plain Python values while noting the line of every field path
(`spec.template.ports[0].name` -> 17), so later checks can say where a
problem is. Duplicate keys and non-scalar keys are noted as located problems;
alias bombs are cut off after `Composer.MAX_NODES` nodes per file.

It must not check what the values mean (that is `gantry.manifest_schema`);
it does no I/O.
"""

from __future__ import annotations

from typing import Any

import yaml

from gantry.manifest_checks import ManifestError


class Composer:
    """Turns a YAML node tree into Python values, noting each field's line."""

    MAX_NODES = 200_000  # aliases can make a small file expand without bound

    def __init__(self) -> None:
        self.constructor = yaml.SafeLoader("")
        self.built = 0

    def build(
        self, node: yaml.Node, path: str, lines: dict[str, int], errs: list[tuple[int, str]]
    ) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        self.built += 1
        if self.built > self.MAX_NODES:
            raise yaml.YAMLError(f"document expands to more than {self.MAX_NODES} nodes (aliases?)")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, lines, errs)
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, f"{path}[{i}]", lines, errs) for i, item in enumerate(node.value)
            ]
        return self.constructor.construct_object(node, deep=True)

    def _mapping(
        self, node: yaml.MappingNode, path: str, lines: dict[str, int], errs: list[tuple[int, str]]
    ) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            key = self.build(knode, "\0", {}, errs)
            if isinstance(key, list | dict):
                errs.append(
                    (
                        knode.start_mark.line + 1,
                        f"{path or '<document>'}: a key must be a plain value",
                    )
                )
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key in out:
                errs.append((knode.start_mark.line + 1, f'{sub}: duplicate key "{key}"'))
            lines[sub] = knode.start_mark.line + 1
            out[key] = self.build(vnode, sub, lines, errs)
        return out


def _blank(node: yaml.Node | None) -> bool:
    return node is None or (
        isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null") and not node.value
    )


def compose_documents(text: str, filename: str) -> list[yaml.Node]:
    """The non-empty documents of a file; ManifestError on a syntax error or none."""
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if not _blank(n)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ManifestError(
            [f"{filename}{line} YAML syntax error: {exc.problem or exc.context}"]
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError([f"{filename}: YAML error: {exc}"]) from None
    if not nodes:
        raise ManifestError([f"{filename}: no documents"])
    return nodes
