import subprocess
import sys
from pathlib import Path

import pytest

from codistill.imports import PACKAGE_ROOT, import_closure
from codistill.stages import get_stage
from codistill.stages.code_deps import compact, stage_code
from tests.conftest import repo_params


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def package(tmp_path):
    """A package named like the project's, so the closure follows its imports."""
    root = tmp_path / "codistill"
    write(
        root,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from codistill.b import g\n",
            "b.py": "def g():\n    pass\n",
            "sub/__init__.py": "",
            "sub/x.py": "",
            "sub/y.py": "",
        },
    )
    return root


def names(paths, root):
    return sorted(p.relative_to(root).as_posix() for p in paths)


def test_the_closure_follows_imports_inside_functions_and_a_new_import_is_covered(package):
    assert names(import_closure({"codistill.a"}, package), package) == [
        "__init__.py",
        "a.py",
        "b.py",
    ]
    (package / "b.py").write_text("import codistill.sub.x\n")  # a new import, two levels down
    found = import_closure({"codistill.a"}, package)
    assert names(found, package) == ["__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/x.py"]
    assert names(compact(found, package), package) == [
        "__init__.py",
        "a.py",
        "b.py",
        "sub/__init__.py",
        "sub/x.py",
    ]
    (package / "b.py").write_text("from codistill.sub import x, y\n")
    assert names(compact(import_closure({"codistill.a"}, package), package), package) == [
        "__init__.py",
        "a.py",
        "b.py",
        "sub",
    ]


@pytest.mark.parametrize("stage", ["prepare", "validate"])
def test_every_project_module_a_stage_loads_is_one_of_its_dvc_code_deps(
    stage, camvid_tree, tiny_validate_params, tmp_path
):
    from codistill.data import create_reader, prepare_dataset

    prepared = tmp_path / "prepared"
    if stage == "prepare":
        argv = ["prepare", "--data", str(camvid_tree), "--out", str(prepared)]
    else:
        prepare_dataset(create_reader("camvid", camvid_tree), prepared, repo_params().prepare)
        argv = ["validate", "--prepared", str(prepared), "--out", str(tmp_path / "v")]
    # the modules the command line loads to parse its arguments are the shell around the
    # stage; what loads after that is the stage's code
    probe = (
        "import sys\n"
        "from codistill.cli import build_parser, main\n"
        "build_parser()\n"
        "shell = set(sys.modules)\n"
        "assert main(sys.argv[1:]) == 0\n"
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n not in shell\n"
        "      and n.startswith('codistill') and getattr(m, '__file__', None)))\n"
    )
    command = [sys.executable, "-c", probe, *argv, "--params", str(tiny_validate_params)]
    loaded = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    files = {Path(line) for line in loaded.stdout.splitlines() if line.endswith(".py")}
    assert PACKAGE_ROOT / "stages" / "runner.py" in files  # the probe saw the stage run
    deps = stage_code(get_stage(stage).entry)
    uncovered = {f for f in files if not any(f == d or d in f.parents for d in deps)}
    assert not uncovered, sorted(map(str, uncovered))


def test_a_relative_import_is_refused_naming_the_file_and_line(package):
    (package / "b.py").write_text("import os\nfrom . import a\n")
    with pytest.raises(ValueError, match=r"b\.py, line 2: a relative import"):
        import_closure({"codistill.a"}, package)
