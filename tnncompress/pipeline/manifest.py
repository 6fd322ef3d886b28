"""manifest.json: what a completed run was made from and what it wrote, so that a later batch reuses the
run only while both still hold.

A run writes it last, into its output directory:

    tnncompress_version   the version that computed the results
    recipe                every option that changes an artifact or a measured figure (all but the gates,
                          which are judged again, and `data.workers`), paths absolute
    inputs                the checkpoint and ranks file by SHA-256; the data by its spec and, for files
                          and folders, each file's path, size and modification time
    artifacts             every file of the output with its size and SHA-256 (report.md and report.html, which
                          are rendered from report.json, are rendered again on reuse rather than checked)
    hmac                  with $TNNCOMPRESS_REUSE_KEY set: HMAC-SHA256 of the rest under that key

`reuse_refusal(directory, recipe)` says why a directory cannot stand for a run of `recipe`, or None.
What this protects against, and what it does not, is the README's "Security: what batch reuse
trusts".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from .. import __version__
from ..data import DataSpec, fashion_mnist_dir, parse_spec
from ..errors import TnncompressError
from ..io import inside, read_json, write_text
from ..io.checkpoint import sha256_of
from .recipe import OPTIONS, Recipe

MANIFEST = "manifest.json"
# Pages rendered from report.json (`tnncompress report DIR` rewrites them, e.g. once matplotlib is installed):
# not checked on reuse, but rendered again from the verified report.
DERIVED = ("report.md", "report.html")
MANIFEST_SCHEMA = 1
KEY_ENV = "TNNCOMPRESS_REUSE_KEY"
_PATH_KEYS = ("model.checkpoint", "compress.ranks")


def recipe_values(recipe: Recipe, keys=None) -> dict[str, object]:
    """{dotted name: value} of the options `keys` selects (default: those a reused run must share), with
    paths made absolute (`--out o` and `--out $PWD/o` are the same run)."""
    keys = keys or (lambda o: o.reuse and o.dotted != "out")
    values = {o.dotted: v for o, v in zip(OPTIONS.options, recipe.values().values(), strict=True) if keys(o)}
    for key in _PATH_KEYS:
        if values.get(key):
            values[key] = os.path.realpath(values[key])
    if values.get("data.spec"):
        spec = parse_spec(values["data.spec"])
        values["data.spec"] = str(DataSpec(spec.kind, Path(os.path.realpath(spec.path)) if spec.path else None,
                                           spec.options))
    return json.loads(json.dumps(values))  # as it reads back from the file


def _tree(path: Path) -> dict:
    """Size and modification time of every file under `path` (or of `path`), digested."""
    h, files = hashlib.sha256(), 0
    entries = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in entries:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        files += 1
    return {"path": str(path), "files": files, "digest": h.hexdigest()}


def inputs_of(recipe: Recipe) -> dict:
    """The run's input files by content (checkpoint, ranks file) or by size and time (data)."""
    inputs: dict[str, object] = {"checkpoint": {"path": os.path.realpath(recipe.model.checkpoint),
                                                "sha256": sha256_of(Path(recipe.model.checkpoint))}}
    if recipe.compress.ranks:
        inputs["ranks"] = {"path": os.path.realpath(recipe.compress.ranks),
                           "sha256": sha256_of(Path(recipe.compress.ranks))}
    if recipe.data.spec:
        spec = parse_spec(recipe.data.spec)
        where = spec.path if spec.path is not None else (
            fashion_mnist_dir()[0] if spec.kind == "fashion-mnist" else None)
        inputs["data"] = {"spec": str(spec), **(_tree(Path(os.path.realpath(where))) if where else {})}
    return inputs


def _artifacts(directory: Path) -> dict[str, dict]:
    return {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _sign(doc: dict, key: str) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != "hmac"}, sort_keys=True).encode()
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def write_manifest(directory: Path, recipe: Recipe, inputs: dict) -> Path:
    """Write manifest.json for the finished output in `directory` (last: it hashes every other file)."""
    doc = {"schema": MANIFEST_SCHEMA, "tnncompress_version": __version__, "recipe": recipe_values(recipe),
           "inputs": inputs, "artifacts": _artifacts(directory)}
    key = os.environ.get(KEY_ENV)
    if key:
        doc["hmac"] = _sign(doc, key)
    return write_text(directory / MANIFEST, json.dumps(doc, indent=2) + "\n")


def reuse_refusal(directory: Path, recipe: Recipe) -> str | None:
    """Why `directory` cannot stand for a run of `recipe` (one line), or None when it can: the same
    version, options and inputs, every artifact present and unchanged, and, when $TNNCOMPRESS_REUSE_KEY
    is set, a manifest signed with it."""
    path = directory / MANIFEST
    if not path.is_file():
        return f"no {MANIFEST} (written by an older tnncompress, or the run did not finish)"
    try:
        doc = read_json(path, MANIFEST)
    except TnncompressError as exc:
        return f"{MANIFEST} is unreadable ({exc})"
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
        return f"{MANIFEST} has another schema"
    key = os.environ.get(KEY_ENV)
    if key and not (isinstance(doc.get("hmac"), str) and hmac.compare_digest(doc["hmac"], _sign(doc, key))):
        return f"{MANIFEST} is not signed with ${KEY_ENV}"
    if doc.get("tnncompress_version") != __version__:
        return f"computed by tnncompress {doc.get('tnncompress_version')}, this is {__version__}"
    before, now = doc.get("recipe"), recipe_values(recipe)
    if before != now:
        changed = sorted(k for k in set(now) | set(before if isinstance(before, dict) else {})
                         if not isinstance(before, dict) or before.get(k) != now.get(k))
        return f"options changed: {', '.join(changed[:8])}" + (" ..." if len(changed) > 8 else "")
    try:
        inputs = inputs_of(recipe)
    except (OSError, TnncompressError) as exc:
        return f"its inputs cannot be read ({exc})"
    if doc.get("inputs") != inputs:
        changed = [k for k in inputs if not isinstance(doc.get("inputs"), dict) or doc["inputs"].get(k) != inputs[k]]
        return f"inputs changed: {', '.join(changed) or 'their list'}"
    artifacts = doc.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        return f"{MANIFEST} lists no artifacts"
    for name, entry in artifacts.items():
        if name in DERIVED:
            continue
        file = directory / name
        if not file.is_file() or file.is_symlink() or not inside(file, directory):
            return f"{name} is missing"
        if not isinstance(entry, dict) or entry.get("bytes") != file.stat().st_size or \
                entry.get("sha256") != sha256_of(file):
            return f"{name} changed since the run"
    return None

