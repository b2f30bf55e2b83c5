"""Write romlib/hub/manifests.json.gz from the reference manifests (``../shared/reference/*_state_dict_shapes.json``).

    python tools/build_manifests.py [REFERENCE_DIR]

The package ships these ``{name: shape}`` tables so that a downloaded checkpoint is checked against
them (:func:`romlib.hub.manifests.state_dict_problem`); tests/test_hub_verify.py checks that the
shipped file equals the reference folder's.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = "_state_dict_shapes.json"


def read_reference(reference: Path) -> dict[str, dict[str, list[int]]]:
    """``{manifest name: {name: shape}}`` of every ``*_state_dict_shapes.json`` in ``reference``."""
    files = sorted(reference.glob("*" + SUFFIX))
    if not files:
        raise FileNotFoundError(f"no *{SUFFIX} in {reference}")
    return {p.name[:-len(SUFFIX)]: json.loads(p.read_text()) for p in files}


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from romlib.hub.manifests import MANIFESTS_FILE
    from tests.support.reference import reference_dir

    reference = Path(argv[0]) if argv else reference_dir()
    if reference is None:
        raise SystemExit("the reference folder ../shared/reference is not available; pass its path")
    table = read_reference(reference)
    data = json.dumps(table, separators=(",", ":"), sort_keys=True).encode()
    with open(MANIFESTS_FILE, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(data)  # mtime=0: the same manifests give the same bytes
    sys.stderr.write(f"wrote {MANIFESTS_FILE} ({MANIFESTS_FILE.stat().st_size} bytes, {len(table)} manifests)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
