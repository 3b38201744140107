"""3D Gaussians as the `.ply` the original 3DGS code writes (graphdeco-inria/gaussian-splatting,
`GaussianModel.save_ply`), which common splat viewers open.

One binary little-endian `vertex` element, every property a 32-bit float, in this order:

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 ... f_rest_{3(K-1)-1}  opacity  scale_0..2  rot_0..3

f_dc: the degree-0 SH coefficient per channel (RGB = 0.5 + C0·f_dc); f_rest: the higher coefficients, channel
major (all of red's K−1 coefficients, then green's, then blue's; K = (degree+1)^2); opacity: the logit; scale: the
log standard deviations; rot: the quaternion (w, x, y, z), not necessarily normalised. 3DGS writes zero normals;
here nx ny nz hold each Gaussian's shortest axis (viewers ignore them). A cloud with sigmoid colours is written
with the f_dc that gives the same RGB.

The header is plain text (`ply`, `format binary_little_endian 1.0`, `element vertex N`, one `property float
NAME` line per column, `end_header`), so the file is written and read with numpy alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dream3d.errors import Dream3DError
from dream3d.geometry.gaussians import SH_C0, GaussianCloud

GAUSSIANS_PLY = "gaussians.ply"  # its name in a run's export folder


@dataclass
class GaussianPly:
    """The columns of a 3DGS `.ply` as tensors (float32). means, normals, f_dc, log_scales: (N,3);
    f_rest: (N,K−1,3) [coefficient, channel]; opacity_logits: (N,); quats: (N,4) (w,x,y,z)."""

    means: torch.Tensor
    normals: torch.Tensor
    f_dc: torch.Tensor
    f_rest: torch.Tensor
    opacity_logits: torch.Tensor
    log_scales: torch.Tensor
    quats: torch.Tensor

    @staticmethod
    def from_cloud(cloud: GaussianCloud) -> GaussianPly:
        """The columns of `cloud` (sigmoid colours converted to the f_dc of the same RGB)."""
        with torch.no_grad():
            f_dc = cloud.colors if cloud.color_mode == "sh" else (cloud.base_colors() - 0.5) / SH_C0
            return GaussianPly(cloud.means.detach().float().cpu(), cloud.normals().float().cpu(),
                               f_dc.detach().float().cpu(), cloud.sh_rest.detach().float().cpu(),
                               cloud.opacity_logits.detach().float().cpu(), cloud.log_scales.detach().float().cpu(),
                               cloud.quats.detach().float().cpu())

    def property_names(self) -> list[str]:
        rest = self.f_rest.shape[1] * 3
        return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(rest)] + ["opacity"] + [f"scale_{i}" for i in range(3)]
                + [f"rot_{i}" for i in range(4)])

    def table(self) -> np.ndarray:
        """(N, columns) float32 in `property_names` order."""
        n = self.means.shape[0]
        rest = self.f_rest.transpose(1, 2).reshape(n, -1)  # channel major, as 3DGS flattens (N,3,K-1)
        return torch.cat([self.means, self.normals, self.f_dc, rest, self.opacity_logits[:, None],
                          self.log_scales, self.quats], 1).numpy().astype("<f4")


def write_gaussian_ply(path: str | os.PathLike, cloud: GaussianCloud | GaussianPly) -> Path:
    """Write `cloud` as a 3DGS `.ply` (see the module doc); returns the path."""
    ply = cloud if isinstance(cloud, GaussianPly) else GaussianPly.from_cloud(cloud)
    names = ply.property_names()
    table = ply.table()
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {table.shape[0]}",
              *[f"property float {name}" for name in names], "end_header"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(np.ascontiguousarray(table).tobytes())
    return path


def read_ply_header(data: bytes, source: str = "the file") -> tuple[int, list[str], int]:
    """(vertex count, property names, offset of the binary body) of a 3DGS `.ply`; Dream3DError (one line) for
    another kind of PLY."""
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise Dream3DError(f"{source} is not a PLY file")
    lines = data[:end].decode("ascii", "replace").splitlines()[1:]
    count, names = -1, []
    for line in lines:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and words[1:2] != ["binary_little_endian"]:
            raise Dream3DError(f"{source}: only binary little-endian Gaussian PLY files are read, not {words[1]}")
        if words[0] == "element":
            if words[1] != "vertex" or count >= 0:
                raise Dream3DError(f"{source}: a Gaussian PLY has one 'vertex' element, found '{words[1]}'")
            count = int(words[2])
        if words[0] == "property":
            if words[1] != "float":
                raise Dream3DError(f"{source}: property {words[-1]} is {words[1]}; a Gaussian PLY has floats only")
            names.append(words[2])
    return count, names, end + len(b"end_header\n")


def read_gaussian_ply(path: str | os.PathLike) -> GaussianPly:
    """The columns of a 3DGS `.ply` (any SH degree; see the module doc)."""
    data = Path(path).read_bytes()
    count, names, offset = read_ply_header(data, str(path))
    table = np.frombuffer(data, dtype="<f4", count=count * len(names), offset=offset).reshape(count, len(names))
    col = {name: i for i, name in enumerate(names)}
    missing = [k for k in ("x", "opacity", "f_dc_0", "scale_0", "rot_0") if k not in col]
    if missing:
        raise Dream3DError(f"{path}: not a Gaussian PLY (no {', '.join(missing)})")

    def cols(*keys: str) -> torch.Tensor:
        return torch.from_numpy(table[:, [col[k] for k in keys]].copy())

    rest_names = sorted((k for k in names if k.startswith("f_rest_")), key=lambda k: int(k.split("_")[-1]))
    rest = cols(*rest_names).reshape(count, 3, -1).transpose(1, 2).contiguous()
    normals = cols("nx", "ny", "nz") if "nx" in col else torch.zeros(count, 3)
    return GaussianPly(cols("x", "y", "z"), normals, cols("f_dc_0", "f_dc_1", "f_dc_2"), rest,
                       cols("opacity")[:, 0].contiguous(), cols("scale_0", "scale_1", "scale_2"),
                       cols("rot_0", "rot_1", "rot_2", "rot_3"))
