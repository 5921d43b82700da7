"""Load the catalog YAML file into a validated Catalog."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tollgate.domain.catalog import Catalog
from tollgate.domain.catalog_parser import parse_catalog
from tollgate.domain.errors import CatalogError, CatalogProblem

EXAMPLE_CATALOG_NAME = "catalog.example.yaml"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which PyYAML would let the last one win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *anchor` keys may be overridden by design
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_catalog_file(path: str | os.PathLike[str]) -> Catalog:
    """Read, parse and validate a catalog YAML file; raise CatalogError on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CatalogError([CatalogProblem(os.fspath(path), f"cannot read: {reason}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = os.fspath(path)
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            where = f"{where}:{mark.line + 1}:{mark.column + 1}"
        message = exc.problem or exc.context or "invalid YAML"
        raise CatalogError([CatalogProblem(where, f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise CatalogError([CatalogProblem(os.fspath(path), f"invalid YAML: {exc}")]) from None
    if data is None:
        raise CatalogError([CatalogProblem(os.fspath(path), "the file is empty")])
    return catalog_from_data(data)


def catalog_from_data(data: Any) -> Catalog:
    """Parse catalog data and keep its canonical JSON, so `catalog sync` can store it."""
    catalog = parse_catalog(data)
    return replace(catalog, source_json=canonical_json(data))


def canonical_json(data: Any) -> str:
    """Return the document as canonical JSON (sorted keys; YAML dates and the like as text)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def example_catalog_path() -> Path:
    """Return the path of the example catalog shipped inside the package."""
    return Path(str(resources.files("tollgate").joinpath(EXAMPLE_CATALOG_NAME)))
