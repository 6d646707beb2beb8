"""The README's Layout section names every module of the package (a new module shows up there or
this fails)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_layout_names_every_module():
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    package = ROOT / "zfnet_cli"
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if p.name != "__init__.py" or p.parent == package
               if p.stem not in layout and p.name not in layout]
    missing += [p.name for p in package.iterdir() if p.is_dir() and not p.name.startswith("_")
                and f"{p.name}/" not in layout]
    assert missing == []


def test_no_module_forwards_names_defined_elsewhere():
    """Each name has one home: apart from the package's lazy library face, no module answers
    for names it does not define (a module-level ``__getattr__`` that forwards them)."""
    import ast

    package = ROOT / "zfnet_cli"
    forwarding = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
                  if p != package / "__init__.py"
                  and any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                          for node in ast.parse(p.read_text()).body)]
    assert forwarding == []


def test_a_library_name_means_one_thing():
    """A name the library face exports is defined by its own module only: no other module of
    the package gives the same name to something else (the commands in cli.py excepted, which
    are named after what they run)."""
    import ast

    from zfnet_cli import _EXPORTS

    package = ROOT / "zfnet_cli"
    clashes = []
    for p in sorted(package.rglob("*.py")):
        module = ".".join(p.relative_to(package).with_suffix("").parts)
        if module in ("__init__", "cli"):
            continue
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) \
                    and _EXPORTS.get(node.name, module) != module:
                clashes.append(f"{module}.{node.name} (the library's is {_EXPORTS[node.name]}'s)")
    assert clashes == []
