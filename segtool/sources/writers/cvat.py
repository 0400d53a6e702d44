"""Predictions -> CVAT for images 1.1 XML, the file CVAT's "Upload annotations" takes.

Each region is a ``<polygon>`` with ``source="auto"`` and its drawing position as
``z_order`` (CVAT draws higher z over lower); holes are polygons of class 0's name, so a task
that receives them needs that label too. The task's labels are listed in ``<meta>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.etree import ElementTree

from segtool.sources.writers.formats import PredictedImage


def _points(points: Sequence[tuple[float, float]]) -> str:
    return ";".join(f"{x:g},{y:g}" for x, y in points)


def document(images: Sequence[PredictedImage], names: Sequence[str], version: str) -> bytes:
    """The XML file's bytes (UTF-8, with its declaration)."""
    root = ElementTree.Element("annotations")
    ElementTree.SubElement(root, "version").text = "1.1"
    meta = ElementTree.SubElement(ElementTree.SubElement(root, "meta"), "task")
    ElementTree.SubElement(meta, "name").text = f"predictions of {version}"
    labels = ElementTree.SubElement(meta, "labels")
    used = {r.label for item in images for r in item.regions}
    for name in [*names[1:], *(n for n in names[:1] if n in used)]:
        ElementTree.SubElement(ElementTree.SubElement(labels, "label"), "name").text = name
    for image_id, item in enumerate(images):
        node = ElementTree.SubElement(
            root,
            "image",
            id=str(image_id),
            name=item.image,
            width=str(item.width),
            height=str(item.height),
        )
        for z, region in enumerate(item.regions):
            ElementTree.SubElement(
                node,
                "polygon",
                label=region.label,
                source="auto",
                occluded="0",
                points=_points(region.points),
                z_order=str(z),
            )
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
