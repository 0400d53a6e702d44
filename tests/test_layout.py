"""The layout keeps its promises: imports flow one way, modules and functions stay small.

docs/architecture.md explains the rule; this test keeps it true. Imports are read from the
source with `ast` (module-level and function-level alike), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "segtool"
#: The pipeline, upstream first: a package may import its own modules and those to its left.
ORDER = ["core", "sources", "rasterize", "split", "train", "predict", "export", "evaluate", "cli"]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The segtool modules `path` imports (``from pkg import module`` resolves to the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "segtool"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "segtool":
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return found


def _layer(module: str) -> int | None:
    """The position of a module's package in ORDER; None for the top-level package."""
    parts = module.split(".")
    return ORDER.index(parts[1]) if len(parts) > 1 and parts[1] in ORDER else None


def test_every_module_belongs_to_a_layer():
    strays = [m for m in MODULES if _layer(m) is None and m not in ("segtool", "segtool.__main__")]
    assert strays == [], "put each module in one of the packages " + ", ".join(ORDER)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_downstream_only(module):
    own = _layer(module)
    for target in sorted(_imports(MODULES[module])):
        theirs = _layer(target)
        if module == "segtool.__main__" or theirs is None:
            continue  # the entry point runs the cli; the top-level package holds the version
        assert own is not None and theirs <= own, (
            f"{module} imports {target}: {ORDER[own] if own is not None else 'segtool'} may "
            f"import only {', '.join(ORDER[: (own or 0) + 1])}"
        )


def test_no_import_cycle():
    graph = {m: sorted(t for t in _imports(p) if t in MODULES) for m, p in MODULES.items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if nxt == node or nxt in ("segtool",):
                continue
            if state.get(nxt) == "open":
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    source = MODULES[module].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{module}: split it by concept"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            first = body[0]
            docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            if docstring and len(body) > 1:  # the docstring does not count
                body = body[1:]
            lines = node.end_lineno - body[0].lineno + 1
            assert lines <= MAX_FUNCTION_LINES, (
                f"{module}.{node.name}: body of {lines} lines; split it into named steps"
            )


#: Calls that delete files or folders: only the one output mechanism may make them.
DELETERS = {"rmtree", "unlink", "rmdir", "removedirs"}


def _deletions(path: Path) -> list[int]:
    """Lines of `path` that delete a file or folder (shutil.rmtree, os.remove, Path.unlink...)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            is_os_remove = name == "remove" and isinstance(owner, ast.Name) and owner.id == "os"
            if name in DELETERS or is_os_remove:
                lines.append(node.lineno)
    return lines


#: The output mechanism: files.py (plans, atomic files) and swap.py (temporaries, the swap).
OUTPUT_MECHANISM = ("segtool.core.files", "segtool.core.swap")


def test_only_the_output_mechanism_deletes():
    found = {
        module: lines
        for module, path in MODULES.items()
        if module not in OUTPUT_MECHANISM and (lines := _deletions(path))
    }
    assert found == {}, "delete through segtool.core.files (remove, output_folder): " + str(found)
    assert any(_deletions(MODULES[m]) for m in OUTPUT_MECHANISM), "the checker must see them"


def test_the_checker_sees_a_wrong_import(tmp_path, monkeypatch):
    """The rule test must fail for a core module that imports a stage."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from segtool.train import loop\n")
    monkeypatch.setitem(MODULES, "segtool.core.bad", bad)
    with pytest.raises(AssertionError, match="core may import only core"):
        test_imports_flow_downstream_only("segtool.core.bad")


#: Packages that do not choose between images and volumes themselves: the reader of a kind
#: (evaluate's `kinds.reader_for`, predict's volume reader/writer) decides, once.
KIND_BLIND = ("evaluate", "predict")
#: How many such choices one module of those packages may make.
MAX_VOLUME_BRANCHES = 1


def _mentions_volume(node: ast.AST) -> bool:
    """Whether an expression names something about volumes: a name, attribute or string
    containing "volume" (any case), e.g. ``is_volume_folder(p)``, ``record.volumes``."""
    for sub in ast.walk(node):
        text = None
        if isinstance(sub, ast.Name):
            text = sub.id
        elif isinstance(sub, ast.Attribute):
            text = sub.attr
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            text = sub.value
        if text is not None and "volume" in text.lower():
            return True
    return False


def _volume_branches(path: Path) -> list[int]:
    """Lines where `path` branches on volumes: the test of an ``if`` statement, a conditional
    expression, a ``while`` loop, a comprehension's ``if`` or a ``match`` subject that
    mentions volumes (`_mentions_volume`)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.If, ast.IfExp, ast.While)):
            tests = [node.test]
        elif isinstance(node, ast.comprehension):
            tests = list(node.ifs)
        elif isinstance(node, ast.Match):
            tests = [node.subject]
        else:
            continue
        lines += [test.lineno for test in tests if _mentions_volume(test)]
    return sorted(lines)


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.split(".")[1:2] and m.split(".")[1] in KIND_BLIND)
)
def test_evaluate_and_predict_branch_on_volumes_once_at_most(module):
    lines = _volume_branches(MODULES[module])
    assert len(lines) <= MAX_VOLUME_BRANCHES, (
        f"{module} branches on volumes at lines {lines}: let the reader of the kind decide"
    )


def test_the_volume_branch_checker_sees_two_branches(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(p, run):\n"
        "    if is_volume_folder(p):\n"
        "        return 1\n"
        "    return [x for x in p if run.volumes] if 'volumes' in run else None\n"
    )
    assert _volume_branches(bad) == [2, 4, 4]
    monkeypatch.setitem(MODULES, "segtool.evaluate.bad", bad)
    with pytest.raises(AssertionError, match="branches on volumes at lines"):
        test_evaluate_and_predict_branch_on_volumes_once_at_most("segtool.evaluate.bad")


#: Packages whose public functions take at most MAX_PARAMETERS (a spec carries the rest).
SPEC_PACKAGES = ("evaluate",)
MAX_PARAMETERS = 8


def _parameter_counts(path: Path) -> list[tuple[str, int]]:
    """(name, parameters) of each public function or method (``self``/``cls`` not counted;
    ``*args`` and ``**options`` count one each)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name.startswith("_"):
                continue
            a = node.args
            names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            n = len(names) - (names[:1] in (["self"], ["cls"])) + bool(a.vararg) + bool(a.kwarg)
            found.append((node.name, n))
    return found


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.split(".")[1:2] and m.split(".")[1] in SPEC_PACKAGES)
)
def test_public_functions_take_few_parameters(module):
    wide = [(n, k) for n, k in _parameter_counts(MODULES[module]) if k > MAX_PARAMETERS]
    assert wide == [], f"{module}: {wide}: pass a spec (EvalSpec) instead"


def test_the_parameter_checker_counts(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(a, b, /, c, d=1, *e, f, g, h, **i): ...\n"
        "class C:\n    def m(self, a, b): ...\n"
        "def _private(a, b, c, d, e, f, g, h, i, j): ...\n"
    )
    assert _parameter_counts(bad) == [("f", 9), ("m", 2)]


def test_one_module_of_evaluate_and_of_predict_reads_nifti():
    """The NIfTI reader of each package is its only module that opens volumes (evaluate's
    `nifti_reader`, predict's `volumes`): a second one would be a fork of the pipeline."""
    for package in KIND_BLIND:
        readers = sorted(
            module
            for module, path in MODULES.items()
            if module.split(".")[1:2] == [package] and "segtool.sources.nifti" in _imports(path)
        )
        assert len(readers) <= 1, f"{package}: {readers} all read NIfTI files; keep one reader"


#: The one module that reads and writes a run's config.json (`RunFolder`), and the one that
#: reads a model folder's own config.json (segmentation-models-pytorch's, `train.model`).
CONFIG_OWNERS = {"segtool.train.runfolder": "the run's", "segtool.train.model": "the model's"}


def _config_literals(path: Path) -> list[int]:
    """Lines of `path` holding the string "config.json" as a whole value (a path part, not a
    mention in a docstring or message)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == "config.json"
    ]


def test_config_json_is_read_in_one_module():
    found = {
        module: lines
        for module, path in MODULES.items()
        if module not in CONFIG_OWNERS and (lines := _config_literals(path))
    }
    assert found == {}, "ask segtool.train.runfolder.RunFolder for the run's records: " + str(found)
    for module in CONFIG_OWNERS:
        assert len(_config_literals(MODULES[module])) == 1, f"{module}: name it once, as a constant"


def test_the_config_checker_sees_a_second_reader(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text(
        'import json\n\ndef f(run):\n    return json.loads((run / "config.json").read_text())\n'
    )
    monkeypatch.setitem(MODULES, "segtool.predict.bad", bad)
    with pytest.raises(AssertionError, match="segtool.predict.bad"):
        test_config_json_is_read_in_one_module()


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Named parameters (not ``self``/``cls``), plus one each for ``*args`` and ``**kwargs``."""
    args = node.args
    named = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if named and named[0] in ("self", "cls"):
        named = named[1:]
    return len(named) + (args.vararg is not None) + (args.kwarg is not None)


def _public_functions(tree: ast.Module):
    """Module-level functions and the methods of module-level classes, not named ``_x``."""
    for node in tree.body:
        inner = node.body if isinstance(node, ast.ClassDef) else [node]
        owner = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
        for function in inner:
            is_function = isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and not function.name.startswith("_"):
                yield owner + function.name, function


def _too_many_parameters(modules: dict[str, Path]) -> dict[str, int]:
    found = {}
    for module, path in modules.items():
        layer = _layer(module)
        if layer == ORDER.index("cli"):
            continue  # a command's function takes what its command line declares
        for name, function in _public_functions(ast.parse(path.read_text(), str(path))):
            if (n := _parameters(function)) > MAX_PARAMETERS:
                found[f"{module}.{name}"] = n
    return found


def test_public_functions_take_at_most_eight_parameters():
    assert _too_many_parameters(MODULES) == {}, "carry the options in a spec"


def test_the_parameter_checker_counts_every_kind(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(a, b, /, c, *d, e, f, g, h, **i):\n    pass\n\n"
        "def g(a, b, c, d, e, f, g, h):\n    pass\n\n"
        "class C:\n    def m(self, a, b, c, d, e, f, g, h, i):\n        pass\n"
    )
    found = _too_many_parameters({"segtool.predict.bad": bad})
    assert found == {"segtool.predict.bad.f": 9, "segtool.predict.bad.C.m": 9}
