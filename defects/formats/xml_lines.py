"""XML annotation files parsed with each element's source line, so errors can name it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from xml.parsers import expat

from defects.formats.errors import FormatError

__all__ = ["LinedXml", "finite_number", "parse_xml"]


class LinedXml:
    """An element tree plus each element's source line (ElementTree does not keep them)."""

    def __init__(self, root: ET.Element, lines: dict[ET.Element, int]):
        self.root = root
        self.lines = lines

    def line(self, element: ET.Element | None) -> int | None:
        return None if element is None else self.lines.get(element)


def parse_xml(path: Path, what: str = "an annotation file") -> LinedXml:
    """Parse with expat directly to record line numbers; DTDs are refused (VOC and CVAT never
    have one).

    Refusing DOCTYPE also rules out entity-expansion tricks in untrusted annotation files.
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    lines: dict[ET.Element, int] = {}

    def start(tag: str, attrs: dict[str, str]) -> None:
        lines[builder.start(tag, attrs)] = parser.CurrentLineNumber

    def doctype(*_: Any) -> None:
        raise FormatError(path, f"DOCTYPE is not allowed in {what}", line=parser.CurrentLineNumber)

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as exc:
        raise FormatError(
            path, f"malformed XML: {expat.ErrorString(exc.code)}", line=exc.lineno
        ) from None
    return LinedXml(builder.close(), lines)


def finite_number(text: str) -> float | None:
    """`text` as a finite float, or None (not a number, inf, nan): the caller names the place."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
