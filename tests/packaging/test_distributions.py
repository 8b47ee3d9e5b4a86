"""The three distributions (docs/packages.md): parrot-client and langchain-parrot install and
import without torch; every parrot subpackage belongs to exactly one distribution.

The unit tests build the two light wheels from a copy of the tree (~5 s) and import them with
torch and the server side blocked; the e2e test installs them into a fresh venv (no system
site-packages), resolving langchain-core and aiohttp from the configured index (~30 s).
"""
from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import textwrap
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "tokenizers", "safetensors", "llguidance", "numpy",
         "parrot-serve", "parrot_kernels")
SERVER_SIDE = ("torch", "transformers", "parrot_kernels", "parrot.engine", "parrot.manager",
               "parrot.server", "parrot.bench", "parrot.cli")
_IGNORE = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "tests")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tree = tmp_path_factory.mktemp("tree")
    for part in ("parrot", "client", "integrations/langchain-parrot"):
        shutil.copytree(ROOT / part, tree / part, ignore=_IGNORE)
    out = tree / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(tree / "client"),
                    str(tree / "integrations/langchain-parrot")],
                   check=True, capture_output=True, timeout=300)
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(found) == {"parrot_client", "langchain_parrot"}, found
    return found


def _metadata(wheel: Path) -> tuple[list[str], list[str]]:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    return names, msg.get_all("Requires-Dist") or []


def _base_requirements(requires: list[str]) -> list[str]:
    return [r for r in requires if "extra ==" not in r]


def test_client_wheel_is_the_api_and_the_vocabulary_only(wheels):
    names, requires = _metadata(wheels["parrot_client"])
    modules = [n for n in names if not n.split("/")[0].endswith(".dist-info")]
    assert "parrot/__init__.py" in modules and "parrot/program/session.py" in modules
    assert "parrot/protocol/template.py" in modules
    outside = [n for n in modules if n not in ("parrot/__init__.py", "parrot/__main__.py")
               and not n.startswith(("parrot/program/", "parrot/protocol/"))]
    assert not outside, outside
    assert [r.split(">")[0].split("=")[0].strip() for r in requires] == ["aiohttp"], requires


def test_langchain_wheel_needs_langchain_core_and_the_client_not_torch(wheels):
    names, requires = _metadata(wheels["langchain_parrot"])
    assert "langchain_parrot/chat_models.py" in names
    assert not any(n.startswith("parrot/") for n in names)
    base = " ".join(_base_requirements(requires))
    assert "parrot-client" in base and "langchain-core" in base, requires
    assert not any(heavy in base for heavy in HEAVY), requires


def test_every_parrot_subpackage_has_one_distribution():
    serve = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                ["tool"]["setuptools"]["packages"])
    client = set(tomllib.loads((ROOT / "client/pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "parrot").rglob("__init__.py")}
    assert not serve & client
    assert on_disk <= serve | client, on_disk - serve - client
    assert "parrot" in client and "parrot-client==0.1.0" in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


_IMPORT_CHECK = textwrap.dedent("""
    import importlib.abc, sys
    site, blocked = sys.argv[1], tuple(sys.argv[2:])

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in blocked or name.startswith(tuple(b + "." for b in blocked)):
                raise ImportError(f"{name} imported by the client side")

    sys.meta_path.insert(0, Block())
    sys.path.insert(0, site)
    import parrot as P
    import langchain_parrot
    from langchain_parrot import ChatParrot

    @P.semantic_function(max_tokens=8)
    def greet(name, reply):
        '''Say hi to {{input:name}}: {{output:reply}}'''

    assert P.__file__.startswith(site) and langchain_parrot.__file__.startswith(site)
    ChatParrot(base_url="http://127.0.0.1:9")  # constructed, never sent
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
    assert not loaded, loaded
    print("ok", greet.template.outputs)
""")


def test_client_and_langchain_import_with_torch_blocked(wheels, tmp_path):
    site = tmp_path / "site"
    for wheel in wheels.values():
        zipfile.ZipFile(wheel).extractall(site)
    run = subprocess.run([sys.executable, "-I", "-c", _IMPORT_CHECK, str(site), *SERVER_SIDE],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok ['reply']"
    control = subprocess.run([sys.executable, "-I", "-c", _IMPORT_CHECK + "import parrot.engine\n",
                              str(site), *SERVER_SIDE], capture_output=True, text=True, timeout=120)
    assert control.returncode != 0 and "parrot.engine imported by the client side" in control.stderr


@pytest.mark.e2e
def test_fresh_venv_installs_langchain_parrot_without_torch(wheels, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *map(str, wheels.values())],
                   check=True, capture_output=True, timeout=600)
    check = ("import importlib.util, sys, parrot, langchain_parrot, parrot.protocol.template; "
             "assert importlib.util.find_spec('torch') is None, 'torch installed'; "
             "assert 'torch' not in sys.modules; print(parrot.__file__)")
    run = subprocess.run([str(python), "-I", "-c", check], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert str(env_dir) in run.stdout
