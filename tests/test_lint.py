"""Static checks that catch silent mistakes tests may miss: a name defined twice in a
module (the later one silently replaces the earlier for every caller), unused imports,
undefined names. Lines marked ``# noqa`` are deliberate."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_sources_have_no_pyflakes_findings():
    api = pytest.importorskip("pyflakes.api")
    reporter_module = pytest.importorskip("pyflakes.reporter")

    class Collect(reporter_module.Reporter):
        def __init__(self) -> None:
            self.findings: list[str] = []

        def unexpectedError(self, filename, message):  # noqa: N802 - pyflakes' interface
            self.findings.append(f"{filename}: {message}")

        def syntaxError(self, filename, message, lineno, offset, text):  # noqa: N802
            self.findings.append(f"{filename}:{lineno}: {message}")

        def flake(self, message):
            path = Path(message.filename)
            line = path.read_text().splitlines()[message.lineno - 1]
            if "noqa" not in line:
                self.findings.append(str(message))

    reporter = Collect()
    for folder in ("src", "kernels", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            api.checkPath(str(path), reporter)
    assert reporter.findings == []
