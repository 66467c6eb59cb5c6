"""The package's import graph follows the data flow: no stage imports a later stage, and
the shared modules import no stage at all."""

import ast

from pipeline import REPO

PACKAGE = REPO / "src" / "dsa110_contimg"
STAGES = [
    {"ingest"},
    {"flagging"},
    {"calibration"},
    {"imaging"},
    {"qa", "qa_catalog"},
    {"mosaic"},
    {"reference_catalog"},
    {"photometry"},
    {"variability"},
]
SHARED = {
    "instrument",
    "astrometry",
    "primary_beam",
    "stats",
    "atomic",
    "provenance",
    "casaenv",
    "io",
    "qa_records",
    "sanity",
    "configuration",
    "catalogs",
    "calibrators",
}
# convert flags the MS before renaming it into place (README, Layout).
ALLOWED = {("ingest.convert", "flagging")}


def _imports():
    """{module: set of dsa110_contimg modules it imports}, module names dotted below the
    package (`calibration.solve`)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "dsa110_contimg."
            ):
                deps.add(node.module.removeprefix("dsa110_contimg."))
            elif isinstance(node, ast.ImportFrom) and node.module == "dsa110_contimg":
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update(
                    a.name.removeprefix("dsa110_contimg.")
                    for a in node.names
                    if a.name.startswith("dsa110_contimg.")
                )
        graph[module] = deps
    return graph


def _rank(module):
    top = module.split(".")[0]
    return next((i for i, stage in enumerate(STAGES) if top in stage), None)


def test_no_stage_imports_a_later_stage():
    graph = _imports()
    assert "calibration.solve" in graph and "ingest.manifest" in graph
    later = sorted(
        (module, dep)
        for module, deps in graph.items()
        for dep in deps
        if _rank(module) is not None
        and _rank(dep) is not None
        and _rank(dep) > _rank(module)
        and (module, dep.split(".")[0]) not in ALLOWED
    )
    assert later == []


def test_shared_modules_import_no_stage():
    graph = _imports()
    assert SHARED <= set(graph)
    staged = sorted(
        (module, dep)
        for module in SHARED
        for dep in graph[module]
        if _rank(dep) is not None or dep.split(".")[0] in {"simulation", "workflow"}
    )
    assert staged == []
