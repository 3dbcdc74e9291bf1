"""The permenrich calls on the migration page (docs/migrating.rst) use real keywords."""

import ast
import inspect
import re
from pathlib import Path

import permenrich

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migrating.rst"


def _python_blocks(text: str) -> list[str]:
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text, flags=re.MULTILINE)
    return [re.sub(r"^   ", "", block, flags=re.MULTILINE) for block in blocks]


def test_migration_page_calls_match_the_signatures():
    calls = []
    for block in _python_blocks(PAGE.read_text(encoding="utf-8")):
        for node in ast.walk(ast.parse(block)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "permenrich"):
                calls.append(node)
    assert len(calls) >= 8
    for call in calls:
        parameters = inspect.signature(getattr(permenrich, call.func.attr)).parameters
        accepted = set(parameters)
        if "options" in parameters:  # contrasts(): the mode's keywords
            accepted |= set(inspect.signature(permenrich.gsea).parameters)
        unknown = {k.arg for k in call.keywords} - accepted
        assert not unknown, f"permenrich.{call.func.attr}: no keyword {sorted(unknown)}"
        positional = [p for p in parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert len(call.args) <= len(positional), f"permenrich.{call.func.attr}: too many positional arguments"
