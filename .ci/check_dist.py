"""Check the built sdist and wheel: metadata, and which files they hold.

Usage: ``python .ci/check_dist.py DIST_DIR`` (the folder ``python -m build`` wrote). Exits
non-zero naming every problem found.
"""

from __future__ import annotations

import ast
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}


def source_version() -> str:
    """``npoptim.__version__`` as written in src/npoptim/__init__.py."""
    tree = ast.parse((ROOT / "src/npoptim/__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise SystemExit("src/npoptim/__init__.py has no __version__")


def bad_names(names: list[str]) -> list[str]:
    """Caches, compiled files and tests that a distribution must not ship."""
    return [
        n
        for n in names
        if n.endswith((".pyc", ".pyo"))
        or FORBIDDEN_PARTS & set(n.split("/"))
        or n.split("/")[0] == "tests"
    ]


def main(dist: Path) -> int:
    problems: list[str] = []
    version = source_version()
    wheels = sorted(dist.glob("npoptim-*.whl"))
    sdists = sorted(dist.glob("npoptim-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
        return 1
    wheel, sdist = wheels[0], sdists[0]

    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = f"npoptim-{version}.dist-info"
        meta = Parser().parsestr(z.read(f"{info}/METADATA").decode())
    expected = {
        "npoptim/" + p.relative_to(ROOT / "src/npoptim").as_posix()
        for p in (ROOT / "src/npoptim").rglob("*")
        if p.is_file() and p.suffix in {".py", ".typed"} and "__pycache__" not in p.parts
    }
    if "npoptim/py.typed" not in expected:
        problems.append("src/npoptim/py.typed is missing from the source tree")
    problems += [f"wheel lacks {n}" for n in sorted(expected - set(names))]
    problems += [f"wheel holds {n}" for n in bad_names(names)]
    outside = [n for n in names if not n.startswith(("npoptim/", f"{info}/"))]
    problems += [f"wheel holds {n} outside the package" for n in outside]
    if f"{info}/licenses/LICENSE" not in names:
        problems.append(f"wheel lacks {info}/licenses/LICENSE")

    checks = {
        "Name": "npoptim",
        "Version": version,
        "License-Expression": "BSD-3-Clause",
        "Author": "The npoptim developers",
    }
    for key, want in checks.items():
        if meta.get(key) != want:
            problems.append(f"METADATA {key}: {meta.get(key)!r}, expected {want!r}")
    if not any(r.replace(" ", "").startswith("numpy>=") for r in meta.get_all("Requires-Dist", [])):
        problems.append("METADATA does not require numpy>=...")
    if not meta.get_all("Project-URL"):
        problems.append("METADATA has no Project-URL")
    if meta.get("Description-Content-Type") != "text/markdown":
        problems.append("METADATA's description is not markdown")

    with tarfile.open(sdist) as t:
        snames = [m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name]
    sdist_needs = ["LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "src/npoptim/py.typed",
                   "src/npoptim/__init__.py", "tests/conftest.py", "tests/harness.py",
                   "examples/quickstart.py", "benchmarks/step_time.py"]  # fmt: skip
    for needed in sdist_needs:
        if needed not in snames:
            problems.append(f"sdist lacks {needed}")
    problems += [f"sdist holds {n}" for n in snames if n.endswith((".pyc", ".pyo"))
                 or FORBIDDEN_PARTS & set(n.split("/"))]  # fmt: skip

    for p in problems:
        print("dist check:", p)
    if not problems:
        print(f"dist check: {wheel.name} ({len(names)} files) and {sdist.name} are complete")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
