"""The layering rules: only chat_tk.gui imports tkinter, and only crypto imports rsa."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "chat_tk"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_everything_outside_gui_loads_without_tkinter() -> None:
    modules = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if "gui" not in p.parts and p.name != "__main__.py"
    ]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "assert 'tkinter' not in sys.modules, 'tkinter was imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_only_crypto_imports_rsa_and_only_gui_imports_tkinter() -> None:
    for path in PACKAGE.rglob("*.py"):
        names = imported_modules(path)
        if path.name != "crypto.py":
            assert "rsa" not in names, path
        if "gui" not in path.parts:
            assert "tkinter" not in names, path


def test_run_py_and_python_m_chat_tk_are_the_same_program() -> None:
    root = PACKAGE.parent
    from_script = subprocess.run(
        [sys.executable, "run.py", "--version"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    from_module = subprocess.run(
        [sys.executable, "-m", "chat_tk", "--version"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert from_script.stdout == from_module.stdout
    assert from_script.stdout.startswith("chat_tk ")
