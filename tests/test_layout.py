"""The dependency direction of DESIGN.md: the library in r1ci/ knows no Ray, no actors and no jobs."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in (ROOT / "r1ci").rglob("*.py")
)


def imported_names(path: Path) -> set[str]:
    """Top-level package of every import statement in a file, lazy ones inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_in_the_library_imports_ray_actors_or_jobs():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_names(p) & {"ray", "actors", "jobs"})
                 for p in (ROOT / "r1ci").rglob("*.py")}
    assert len(offenders) == len(MODULES) > 30
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_library_module_loads_no_ray():
    code = (f"import importlib, sys\nfor m in {MODULES!r}:\n    importlib.import_module(m)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'actors', 'jobs'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
