"""The docs match the code: the API page is generated from it, every relative link resolves, and
every ``romlib <command>`` the README and docs show is a real subcommand."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_api_docs", ROOT / "tools" / "build_api_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_api_reference_is_up_to_date():
    stored = (ROOT / "docs" / "api.md").read_text()
    assert stored == _load_builder().render(), "docs/api.md is stale: run python tools/build_api_docs.py"
    modules = (ROOT / "docs" / "modules.md").read_text()
    assert modules == _load_builder().render_modules(modules), \
        "the methods table of docs/modules.md is stale: run python tools/build_api_docs.py"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = doc.read_text()
    links = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in t and not t.startswith("mailto:")]
    missing = [t for t in links if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name}: broken links {missing}"


def test_commands_in_docs_exist():
    from romlib.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    shown = set()
    for doc in DOCS:
        text = doc.read_text()
        code = re.findall(r"(?s)```[a-z]*\n(.*?)```", text) + re.findall(r"`([^`\n]+)`", re.sub(r"(?s)```.*?```", "", text))
        for chunk in code:  # a command line starts with `romlib`, maybe after `$ ` or `!`
            shown |= set(re.findall(r"(?m)^\s*[$!]?\s*romlib ([a-z][a-z-]+)", chunk))
    assert shown, "the README shows no romlib command"
    assert shown <= set(sub.choices), f"commands in the docs that the CLI lacks: {shown - set(sub.choices)}"


def test_glossary_defines_the_terms_the_notebooks_use():
    text = (ROOT / "docs" / "glossary.md").read_text()
    terms = ["ε-prediction", "ᾱ_t", "respacing", "`fast27`", "`ddim25`", '`"100"`', "`squaredcos_cap_v2`",
             "classifier guidance", "CLIP guidance", "CF, classifier-free guidance", "CCF, conditional classifier-free",
             "c_ref, c_target", "known region", "dilation k", "local ranking", "masked ranking", "Wilson interval",
             "ICC", "design effect", "win probability", "average rank", "ShapesWorld", "the oracle", "run A … E",
             "`--p-partial`", "`--p-source`", "`--p-remove`"]
    defined = re.findall(r"\*\*(.+?)\*\*", text)  # the bold heads of the definitions
    missing = [t for t in terms if not any(t in d for d in defined)]
    assert not missing, f"docs/glossary.md lacks a definition of {missing}"
    for eq in ("eq. 1", "eq. 3", "eq. 4", "eq. 6", "eq. 7", "eq. 8", "§4.4", "§4.5", "Table 1"):
        assert eq in text, eq
