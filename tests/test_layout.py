"""The package's layout holds: imports run one way, no code outside the specs asks a backend's name or family,
every fact of a backend on its spec, the ``rl.`` aliases without collisions."""
import json
import os
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


# ---------------------------------------------------------------------------------------------- two files each
#: a throwaway backend and guidance method, each in its own module (the second file of each addition): the
#: backend's loader reads the file its spec downloads, the method's loader builds its own "network" (a factor)
BACKEND_MODULE = '''
import dataclasses
import json

from romlib.backends import tiny_baselines
from romlib.shapes.backend import load_spec


def load_backend(spec, *, device, paths, baselines, **_):  # ShapesWorld's models; the baselines' tiny ones if asked
    variant = json.loads(paths["toy/weights"].read_text())["variant"]
    backend = load_spec(spec, device=device, variant=variant)
    extras = tiny_baselines(ranker=backend.ranker, device=device) if baselines else {}
    return dataclasses.replace(backend, extras={**backend.extras, **extras})
'''
METHOD_MODULE = '''
from romlib.guidance.methods import ClassifierFree
from romlib.sampling.inpaint import prepare_base


def load_factor(spec, *, ranker, device, dtype, progress):
    return {"factor": 2.0, "backend": spec.name}


class Doubled(ClassifierFree):
    def base_setup(self, pipe, p, ref, target, scale, record=False):
        b = pipe.backend
        return prepare_base(b.base_model, b.tokenizer, image=p.image_base, keep_mask=p.keep_base, target=target,
                            ref=ref, rule="ccf", scale=scale * b.extras[self.needs]["factor"], record=record)
'''
#: the one entry each, inserted into the text of romlib/specs.py where a maintainer writes it
BACKEND_ENTRY = '''    BackendSpec("toy", "pixel", "a throwaway backend (tests)", "toybackend:load_backend", frame=48, base_frame=32,
                segmenter="shapes", baselines=True, downloads=({"name": "toy/weights", "url": "https://example.invalid/toy/weights.json",
                                            "file": "toy-weights.json", "format": "config", "approx_mb": 0.001},)),
'''
METHOD_ENTRY = '''    MethodSpec("toy-doubled", "toymethod:Doubled", "Doubled", "CCF at twice the scale (tests)", 3.0,
               needs="factor", loader="toymethod:load_factor"),
'''
#: run in a fresh process: the patched specs replace romlib.specs before anything reads them
RUN_PLUGIN = r'''
import importlib.util, json, sys
from pathlib import Path
tmp = Path(sys.argv[1])
s = importlib.util.spec_from_file_location("romlib.specs", tmp / "specs.py")
specs = importlib.util.module_from_spec(s)
sys.modules["romlib.specs"] = specs
s.loader.exec_module(specs)
from romlib.cli import build_parser, main
args = build_parser().parse_args(["edit", "x.png", "--ref", "a", "--target", "b", "--backend", "toy",
                                  "--guidance", "toy-doubled"])
out = {"parsed": [args.backend, args.guidance], "torch_for_the_parser": "torch" in sys.modules}
from romlib import arguments, backends, hub
out["frame"] = arguments.BACKEND_FRAME["toy"]
out["listed"] = "toy/weights" in hub.REGISTRY and hub.REGISTRY["toy/weights"].filename == "toy-weights.json"
out["files"] = list(backends.files("toy"))
out["download"] = main(["download", "toy/weights"])
out["edit"] = main(["edit", str(tmp / "photo.png"), "--mask", str(tmp / "mask.png"), "--ref", "the square", "--target", "a circle", "--backend", "toy",
                    "--guidance", "toy-doubled", "--samples", "1", "--steps", "2", "--no-upsample",
                    "--out", str(tmp / "out"), "--device", "cpu"])
result = json.loads(next((tmp / "out").rglob("result.json")).read_text())
out["settings"] = {k: result["settings"].get(k) for k in ("backend", "guidance", "scale")}
print("PLUGIN " + json.dumps(out))
'''


def _insert(text: str, table: str, entry: str) -> str:
    """``entry`` added as the last item of the ``table = {... for ... in (`` literal of romlib/specs.py."""
    start = text.index(f"\n{table}: dict[")
    end = text.index("\n)}", start)
    return text[:end + 1] + entry + text[end + 1:]


@pytest.mark.timeout(300)
def test_a_new_backend_and_method_are_one_spec_entry_and_one_module_each(tmp_path):
    """A throwaway backend (with a file to download) and a method (with its own loader): each one entry in the text
    of romlib/specs.py plus one module; the CLI parser (without torch), the free-space estimate, the hub's registry,
    the backend's file list, ``romlib download`` and ``romlib edit`` pick them up, no other file edited."""
    from PIL import Image

    text = (ROOT / "romlib" / "specs.py").read_text()
    (tmp_path / "specs.py").write_text(_insert(_insert(text, "BACKENDS", BACKEND_ENTRY), "METHOD_SPECS", METHOD_ENTRY))
    (tmp_path / "toybackend.py").write_text(BACKEND_MODULE)
    (tmp_path / "toymethod.py").write_text(METHOD_MODULE)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy-weights.json").write_text('{"variant": null}')
    Image.new("RGB", (48, 40), (200, 30, 30)).save(tmp_path / "photo.png")
    mask = Image.new("L", (48, 40), 0)
    mask.paste(255, (10, 10, 30, 30))
    mask.save(tmp_path / "mask.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "ROMLIB_MIRROR": str(mirror),
           "ROMLIB_CACHE": str(tmp_path / "cache"), "ROMLIB_OFFLINE": "0", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", RUN_PLUGIN, str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("PLUGIN ", 1)[1])
    assert out["parsed"] == ["toy", "toy-doubled"] and out["torch_for_the_parser"] is False
    assert out["frame"] == 48 and out["listed"] and out["files"] == ["toy/weights"]
    assert out["download"] == 0 and (tmp_path / "cache" / "toy-weights.json").is_file()
    assert out["edit"] == 0, proc.stderr[-4000:]
    assert out["settings"] == {"backend": "toy", "guidance": "toy-doubled", "scale": 3.0}


def test_the_specs_state_each_method_name_once():
    from romlib.guidance.methods import METHODS
    from romlib.specs import METHOD_NAMES, METHOD_SPECS

    assert tuple(METHODS) == METHOD_NAMES == tuple(METHOD_SPECS)
    assert all(type(m).__name__ == METHOD_SPECS[n].kind.rsplit(":", 1)[1] for n, m in METHODS.items())
    code = (ROOT / "romlib" / "guidance" / "methods.py").read_text()
    assert not re.search(r"""\(\s*["'](ccf|cf|clip|blended)["'],""", code)  # no entry written a second time
