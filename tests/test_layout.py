"""The package's layout holds: imports run one way, no code outside the specs asks a backend's name or family,
every fact of a backend on its spec, the ``rl.`` aliases without collisions."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import import_graph  # noqa: E402

import romlib  # noqa: E402
from romlib.arguments import BACKEND_FRAME  # noqa: E402
from romlib.specs import BACKENDS, SAMPLERS  # noqa: E402


def test_imports_run_one_way():
    graph = import_graph.measure()
    cycles = [c for c in graph["cycles"] if not all(m.startswith("romlib.hub.") for m in c)]
    assert cycles == [], f"import cycles: {cycles}"
    assert len(graph["against"]) <= 6, f"imports against the layering: {graph['against']}"


def test_the_graph_tool_finds_a_cycle_and_an_import_against_the_layering():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_graph.cycles(edges) == [["a", "b", "c"]]
    assert import_graph.layer("romlib.checks") < import_graph.layer("romlib.pipeline") < import_graph.layer("romlib.cli")


#: a branch on a backend's name or family (the specs and the family adapters answer these questions)
BRANCH = re.compile(r"""backend\.name\s*[!=]=|\.family\s*[!=]=|[!=]=\s*["'](glide|shapes|tiny|sd|tiny-sd|pixel|latent)["']"""
                    r"""|name\s+(not\s+)?in\s+\(["'](glide|shapes|tiny|sd|tiny-sd)""")
CHECKED = ["romlib/pipeline.py", "romlib/experiments.py", "romlib/cli.py", "romlib/arguments.py", "romlib/guidance",
           "romlib/teach"]


def test_no_code_outside_the_specs_branches_on_a_backend_name_or_family():
    found = []
    for entry in CHECKED:
        path = ROOT / entry
        for f in ([path] if path.is_file() else sorted(path.rglob("*.py"))):
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if BRANCH.search(line.split("#")[0]):
                    found.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert found == []
    assert BRANCH.search('if pipe.backend.name == "shapes":') and BRANCH.search('if b.family == "latent":')


def test_every_backend_fact_reads_its_spec():
    assert set(BACKEND_FRAME) == set(BACKENDS)
    assert BACKEND_FRAME["sd"] == 512 and BACKENDS["sd"].frame_size(upsample=False) == 512
    assert BACKENDS["glide"].frame_size(upsample=False) == 64
    from romlib.config import EditConfig

    flags = {f.name: f.metadata for f in EditConfig.__dataclass_fields__.values()}
    assert flags["sampler"]["choices"] == tuple(SAMPLERS)
    with pytest.raises(ValueError, match="eta is read by sampler='ddim' only"):
        EditConfig(sampler="ancestral", eta=0.5).validate()


def test_the_aliases_name_each_module_by_its_last_part():
    for alias, module in romlib._SUBMODULES.items():
        assert module.rsplit(".", 1)[-1] == alias, (alias, module)
    assert romlib.latent.__name__ == "romlib.sampling.latent"


def test_the_specs_and_the_settings_import_without_torch():
    code = "import sys, romlib.specs, romlib.config, romlib.checks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
