"""Run the Khronos glTF validator (npm package `gltf-validator`) on a file through node.

The package lives in the git-ignored `.cache/node` folder at the repository root, installed by

    npm install --silent --prefix .cache/node gltf-validator@2.0.0-dev.3.10

(`make test` does it; `ensure_validator` does it on first use when npm is there). Tests call `node_available()`
to skip when node itself is missing, and `validate(path)` for the report.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = ROOT / ".cache" / "node"
PACKAGE = PREFIX / "node_modules" / "gltf-validator"
NPM_SPEC = "gltf-validator@2.0.0-dev.3.10"

_SCRIPT = r"""
const fs = require("fs");
const validator = require(process.argv[1]);
const data = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(data, {maxIssues: 1000}).then(
  (report) => { process.stdout.write(JSON.stringify(report)); },
  (err) => { process.stderr.write(String(err)); process.exit(3); });
"""


def node_available() -> bool:
    """True when a `node` executable is on PATH."""
    return shutil.which("node") is not None


def ensure_validator() -> Path:
    """The validator package folder, installing it with npm into `.cache/node` if it is not there yet."""
    if not (PACKAGE / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("gltf-validator is not installed and npm is missing; run: "
                               f"npm install --prefix .cache/node {NPM_SPEC}")
        subprocess.run([npm, "install", "--silent", "--prefix", str(PREFIX), NPM_SPEC], check=True,
                       capture_output=True, timeout=300)
    return PACKAGE


def validate(path: str | Path) -> dict:
    """The validator's report (dict) for a .glb/.gltf file; report["issues"]["numErrors"] counts errors."""
    package = ensure_validator()
    proc = subprocess.run(["node", "-e", _SCRIPT, str(package), str(Path(path).resolve())], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"gltf-validator failed on {path}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def summary(report: dict) -> str:
    """One line per issue: severity code pointer message."""
    names = {0: "error", 1: "warning", 2: "info", 3: "hint"}
    return "\n".join(f"{names.get(m.get('severity'), m.get('severity'))} {m.get('code')} {m.get('pointer', '')} "
                     f"{m.get('message')}" for m in report.get("issues", {}).get("messages", []))
