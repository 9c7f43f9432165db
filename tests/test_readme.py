"""What a newcomer reads and types: the README's configuration reference names every option in conf/,
the console scripts it uses work from any directory, and every experiment script's --help is its
whole docstring (not a first line cut mid-sentence)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reference_rows():
    """group -> the text of its row in the README's configuration reference table."""
    text = (ROOT / "README.md").read_text().split("### Configuration reference", 1)[1]
    return {m[1]: m[0] for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}


def test_the_configuration_reference_lists_every_option_of_every_group():
    rows = reference_rows()
    missing = []
    for group in sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir()):
        if group.name not in rows:
            missing.append(f"group {group.name}")
            continue
        for option in sorted(group.glob("*.yaml")):
            name = option.stem
            listed = f"`{name}`" in rows[group.name] or any(  # `ablate_{reward,features}` lists several
                name == f"{pre}{alt}" for pre, alts in re.findall(r"`(\w*)\{([\w,]+)\}`", rows[group.name])
                for alt in alts.split(","))
            if not listed:
                missing.append(f"{group.name}={name}")
    assert not missing, missing


def test_console_scripts_run_from_any_directory(tmp_path):
    """`vidur-ppo` and `vidur-ppo-evaluate` (pyproject's [project.scripts]) find conf/ wherever they are run."""
    bin_dir = Path(sys.executable).parent
    for script, arg in (("vidur-ppo", "ppo.gae_lambda=2"), ("vidur-ppo-evaluate", "eval=nope")):
        out = subprocess.run([str(bin_dir / script), arg], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("config error:"), out.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_every_experiment_script_prints_its_whole_docstring_as_help():
    from importlib import util

    spec = util.spec_from_file_location("common", ROOT / "experiments" / "common.py")
    common = util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        spec.loader.exec_module(common)
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    doc = "Line one of a script's docstring,\ncontinued on line two.\n\n  an indented example\n"
    assert common.arg_parser(doc).format_help().count(doc.strip()) == 1
    for script in sorted((ROOT / "experiments").glob("*.py")):
        tree = ast.parse(script.read_text())
        if script.name == "common.py" or not any(isinstance(n, ast.Name) and n.id == "__name__" for n in ast.walk(tree)):
            continue
        parsers = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "arg_parser"]
        assert parsers and ast.get_docstring(tree), f"{script.name}: --help must come from common.arg_parser(__doc__)"
