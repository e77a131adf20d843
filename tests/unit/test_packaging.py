"""What the wheel ships: the product's packages, its in-memory demo adapters, and no
wire fakes or tests (built here with the project's own build backend)."""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("mapping", "connectors", "sync")


def test_the_wheel_holds_no_fakes_and_no_tests(tmp_path: Path) -> None:
    (wheel,) = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {*PRODUCT, "kanvoice-0.1.0.dist-info"}
    assert [n for n in names if "fake" in n.lower()] == []
    assert {"connectors/stripe/memory.py", "connectors/slack/memory.py"} <= set(names)
    assert "connectors/simulated.py" in names  # the demo's boards stay in the product


def test_no_product_module_imports_the_tests() -> None:
    offenders = []
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                offenders += [
                    f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "tests"
                ]
    assert offenders == []
