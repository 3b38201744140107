"""File writers: binary glTF 2.0 (.glb) and Wavefront OBJ (.obj + .mtl + PNG), written atomically.

The GLB holds one mesh with POSITION, NORMAL, TEXCOORD_0 and uint32 indices, and one metallic-roughness PBR
material (metallic 0, roughness 1, baseColorTexture = the embedded PNG). World units, y-up, +z front: the same
axes as glTF, so no transform is applied. glTF's texture V points down (row 0 at v = 0) while our UVs
(`dream3d.export.uv`) point up, so TEXCOORD_0 stores (u, 1 − v). OBJ keeps v up, as OBJ readers expect.
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np

from dream3d.export.uv import UVMesh
from dream3d.fileio import write_bytes_atomic

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A  # "JSON"
CHUNK_BIN = 0x004E4942  # "BIN\0"
FLOAT, UNSIGNED_INT = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an (H,W,3) uint8 image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _unit(normals: np.ndarray) -> np.ndarray:
    n = np.asarray(normals, dtype=np.float64)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(norm > 1e-12, n / np.maximum(norm, 1e-300), np.array([0.0, 1.0, 0.0]))
    return n.astype(np.float32)


def glb_bytes(mesh: UVMesh, texture_png: bytes, name: str = "dream3d") -> bytes:
    """A complete binary glTF 2.0 asset (bytes) for a textured mesh."""
    positions = np.ascontiguousarray(mesh.vertices, dtype=np.float32)
    normals = _unit(mesh.normals)
    texcoords = np.stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]], -1).astype(np.float32)
    indices = np.ascontiguousarray(mesh.faces, dtype=np.uint32).reshape(-1)
    blobs: list[bytes] = []
    views: list[dict] = []
    offset = 0

    def add_view(data: bytes, target: int | None) -> int:
        nonlocal offset
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        pad = (-len(data)) % 4  # every view starts 4-byte aligned
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
        views.append(view)
        return len(views) - 1

    accessors = [
        {"bufferView": add_view(positions.tobytes(), ARRAY_BUFFER), "componentType": FLOAT,
         "count": int(positions.shape[0]), "type": "VEC3",
         "min": positions.min(0).tolist(), "max": positions.max(0).tolist()},
        {"bufferView": add_view(normals.tobytes(), ARRAY_BUFFER), "componentType": FLOAT,
         "count": int(normals.shape[0]), "type": "VEC3"},
        {"bufferView": add_view(texcoords.tobytes(), ARRAY_BUFFER), "componentType": FLOAT,
         "count": int(texcoords.shape[0]), "type": "VEC2"},
        {"bufferView": add_view(indices.tobytes(), ELEMENT_ARRAY_BUFFER), "componentType": UNSIGNED_INT,
         "count": int(indices.shape[0]), "type": "SCALAR"},
    ]
    image_view = add_view(texture_png, None)
    binary = b"".join(blobs)
    gltf = {
        "asset": {"version": "2.0", "generator": "dream3d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{
            "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2}, "indices": 3, "material": 0, "mode": 4}]}],
        "materials": [{"name": f"{name}_material", "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0, "texCoord": 0}, "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
            "metallicFactor": 0.0, "roughnessFactor": 1.0}, "doubleSided": False}],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": CLAMP_TO_EDGE,
                      "wrapT": CLAMP_TO_EDGE}],
        "images": [{"bufferView": image_view, "mimeType": "image/png", "name": f"{name}_albedo"}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join([struct.pack("<III", GLB_MAGIC, 2, total), struct.pack("<II", len(js), CHUNK_JSON), js,
                     struct.pack("<II", len(binary), CHUNK_BIN), binary])


def write_glb(path: str | os.PathLike, mesh: UVMesh, texture: np.ndarray, name: str = "dream3d") -> Path:
    """Write the textured mesh as a .glb (texture (H,W,3) uint8 embedded as PNG); returns the path."""
    path = Path(path)
    write_bytes_atomic(path, glb_bytes(mesh, png_bytes(texture), name))
    return path


def _rows(fmt: str, values: np.ndarray) -> str:
    return "".join(fmt % tuple(row) for row in values.tolist())


def write_obj(path: str | os.PathLike, mesh: UVMesh, texture: np.ndarray,
              texture_name: str | None = None) -> dict[str, Path]:
    """Write `path` (.obj), its .mtl and the texture PNG beside it (names relative, so the folder can move).

    Returns {"obj": ..., "mtl": ..., "texture": ...}. The texture file defaults to `<stem>_albedo.png`.
    """
    path = Path(path)
    mtl_path = path.with_suffix(".mtl")
    tex_path = path.with_name(texture_name or f"{path.stem}_albedo.png")
    material = f"{path.stem}_material"
    f = mesh.faces + 1
    faces = np.stack([f, f, f], -1).reshape(-1, 9)  # v/vt/vn share one index per vertex
    text = "".join([
        "# dream3d export\n", f"mtllib {mtl_path.name}\n", f"o {path.stem}\n",
        _rows("v %.6f %.6f %.6f\n", mesh.vertices.astype(np.float64)),
        _rows("vt %.6f %.6f\n", mesh.uvs.astype(np.float64)),
        _rows("vn %.6f %.6f %.6f\n", _unit(mesh.normals).astype(np.float64)),
        f"usemtl {material}\n", "s 1\n",
        _rows("f %d/%d/%d %d/%d/%d %d/%d/%d\n", faces),
    ])
    mtl = (f"# dream3d export\nnewmtl {material}\nKa 0.000 0.000 0.000\nKd 1.000 1.000 1.000\n"
           f"Ks 0.000 0.000 0.000\nNs 0.0\nd 1.0\nillum 1\nPm 0.0\nPr 1.0\nmap_Kd {tex_path.name}\n")
    write_bytes_atomic(tex_path, png_bytes(texture))
    write_bytes_atomic(mtl_path, mtl.encode("utf-8"))
    write_bytes_atomic(path, text.encode("utf-8"))
    return {"obj": path, "mtl": mtl_path, "texture": tex_path}
