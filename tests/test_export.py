"""Export: automatic level, marching cubes, floaters, UV atlas, baking, GLB/OBJ files, turntables.

Everything runs on analytic fields built here from the shapes world's SDFs: σ = σ_max·sigmoid(−sdf/ε) and an
albedo that varies along all three axes, so a flipped or transposed texture is caught. Expectations are
independent of the exporter: a float64 quadrature of the opacity for the level, a parity voxelizer for the IoU,
a GLB parser written here for the texture orientation, the Khronos validator for the file.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch

from dream3d.cameras import orbit_cameras
from dream3d.errors import Dream3DError
from dream3d.export import export_geometry, write_turntable
from dream3d.export.bake import rasterize_uv
from dream3d.export.level import axis_views, level_from_rays, march_views
from dream3d.export.surface import (cells_crossing, coarse_density_grid, extract_surface, marching_cubes,
                                    refine_density_grid)
from dream3d.shapes.primitives import SPHERE_R, sdf

sys.path.insert(0, str(Path(__file__).parent))
import gltf_validator  # noqa: E402


class Field(torch.nn.Module):
    """Soft occupancy of a shapes-world primitive with a position-dependent albedo (the geometry interface).

    σ(x) = density_max·sigmoid(−sdf(x)/sharpness) (+ an optional small floater sphere);
    albedo(x) = 0.5 + 0.4·x/bound per channel, i.e. red grows with x, green with y, blue with z.
    """

    def __init__(self, shape: str = "sphere", density_max: float = 1000.0, sharpness: float = 0.005,
                 floater: tuple[float, float, float, float] | None = None, bound: float = 1.0) -> None:
        super().__init__()
        self.shape, self.density_max, self.sharpness, self.bound = shape, density_max, sharpness, bound
        self.floater = floater

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        d = sdf(self.shape, x)
        if self.floater is not None:
            c = torch.tensor(self.floater[:3], dtype=x.dtype)
            d = torch.minimum(d, (x - c).norm(dim=-1) - self.floater[3])
        return d

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.density_max * torch.sigmoid(-self.sdf(x) / self.sharpness)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 + 0.4 * x / self.bound).clamp(0, 1)


# --- independent helpers ------------------------------------------------------------------------------------------
def read_glb(path: Path) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """Minimal GLB reader: (json, {POSITION, NORMAL, TEXCOORD_0, indices}, base-colour image (H,W,3) uint8)."""
    from PIL import Image

    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and length == len(data)
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A
    gltf = json.loads(data[20:20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942
    binary = data[28 + jlen:28 + jlen + blen]
    dtypes = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}
    ncomp = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}

    def accessor(i: int) -> np.ndarray:
        acc = gltf["accessors"][i]
        view = gltf["bufferViews"][acc["bufferView"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        arr = np.frombuffer(binary, dtype=dtypes[acc["componentType"]], count=acc["count"] * ncomp[acc["type"]],
                            offset=start)
        return arr.reshape(acc["count"], ncomp[acc["type"]])

    prim = gltf["meshes"][0]["primitives"][0]
    arrays = {k: accessor(v) for k, v in prim["attributes"].items()}
    arrays["indices"] = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64)
    tex = gltf["materials"][prim["material"]]["pbrMetallicRoughness"]["baseColorTexture"]["index"]
    img = gltf["images"][gltf["textures"][tex]["source"]]
    view = gltf["bufferViews"][img["bufferView"]]
    png = binary[view.get("byteOffset", 0):view.get("byteOffset", 0) + view["byteLength"]]
    image = np.asarray(Image.open(BytesIO(png)).convert("RGB"))
    return gltf, arrays, image


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup at continuous texel coordinates (texel centres at integer + 0.5); (N,) -> (N,3) in [0,1]."""
    h, w = image.shape[:2]
    x = np.clip(x - 0.5, 0, w - 1)
    y = np.clip(y - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float64) / 255.0
    return ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x1] + (1 - fx) * fy * img[y1, x0]
            + fx * fy * img[y1, x1])


def surface_samples(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0):
    """Area-uniform random points on a mesh: (face index (n,), barycentrics (n,3), points (n,3))."""
    rng = np.random.default_rng(seed)
    tri = vertices[faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    f = rng.choice(faces.shape[0], n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], -1)
    return f, bary, np.einsum("nk,nkc->nc", bary, tri[f])


def parity_occupancy(vertices: np.ndarray, faces: np.ndarray, n: int, bound: float = 1.0) -> np.ndarray:
    """Inside/outside (n,n,n) bool at cell centres [x,y,z] by counting mesh crossings along +z per (x,y) column."""
    c = (np.arange(n) + 0.5) / n * 2 * bound - bound
    cx = c + 1.234e-5  # off-grid columns: no column passes exactly through a mesh vertex or edge
    tri = vertices[faces].astype(np.float64)
    a, b, d = tri[:, 0], tri[:, 1], tri[:, 2]
    lo, hi = tri[:, :, :2].min(1), tri[:, :, :2].max(1)
    step = 2 * bound / n
    i0 = np.clip(np.ceil((lo[:, 0] - cx[0]) / step), 0, n).astype(int)
    i1 = np.clip(np.floor((hi[:, 0] - cx[0]) / step), -1, n - 1).astype(int)
    j0 = np.clip(np.ceil((lo[:, 1] - cx[0]) / step), 0, n).astype(int)
    j1 = np.clip(np.floor((hi[:, 1] - cx[0]) / step), -1, n - 1).astype(int)
    ni, nj = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
    cnt = ni * nj
    fid = np.repeat(np.arange(faces.shape[0]), cnt)
    local = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    ii, jj = i0[fid] + local % ni[fid], j0[fid] + local // ni[fid]
    px, py = cx[ii], cx[jj]
    e1, e2 = b[fid] - a[fid], d[fid] - a[fid]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-18
    qx, qy = px - a[fid, 0], py - a[fid, 1]
    u = np.where(ok, (qx * e2[:, 1] - qy * e2[:, 0]) / np.where(ok, det, 1), -1)
    v = np.where(ok, (e1[:, 0] * qy - e1[:, 1] * qx) / np.where(ok, det, 1), -1)
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    z = a[fid, 2] + u * e1[:, 2] + v * e2[:, 2]
    ii, jj, z = ii[inside], jj[inside], z[inside]
    k = np.searchsorted(c, z)  # the hit is below cells k, k+1, ...
    counts = np.zeros((n, n, n + 1), dtype=np.int64)
    np.add.at(counts, (ii, jj, k), 1)
    return (np.cumsum(counts, axis=2)[:, :, :n] % 2) == 1


def cell_centres(n: int, bound: float = 1.0) -> torch.Tensor:
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 * bound - bound
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def euler_characteristic(faces: np.ndarray) -> int:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return int(np.unique(faces).shape[0] - np.unique(edges, axis=0).shape[0] + faces.shape[0])


# --- the shared export (a torus: genus 1, curved everywhere, many UV charts) -------------------------------------
@pytest.fixture(scope="module")
def torus_export(tmp_path_factory):
    field = Field("torus")
    out = tmp_path_factory.mktemp("export")
    result = export_geometry(field, out, resolution=128, texture_size=512, max_faces=12000)
    return field, out, result


def test_export_writes_the_files(torus_export):
    _, out, result = torus_export
    files = result["files"]
    assert files["glb"] == out / "model.glb" and files["obj"] == out / "model.obj"
    assert files["mtl"] == out / "model.mtl" and files["texture"] == out / "model_albedo.png"
    for p in files.values():
        assert p.stat().st_size > 0
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries
    mtl = files["mtl"].read_text()
    assert "map_Kd model_albedo.png" in mtl
    obj = files["obj"].read_text().splitlines()
    stats = result["stats"]
    assert sum(line.startswith("v ") for line in obj) == stats["vertices"]
    assert sum(line.startswith("vt ") for line in obj) == stats["vertices"]
    assert sum(line.startswith("vn ") for line in obj) == stats["vertices"]
    assert sum(line.startswith("f ") for line in obj) == stats["faces"] <= 12000
    assert "mtllib model.mtl" in obj


@pytest.mark.skipif(not gltf_validator.node_available(), reason="node is not installed")
def test_glb_passes_the_khronos_validator(torus_export):
    _, _, result = torus_export
    report = gltf_validator.validate(result["files"]["glb"])
    assert report["issues"]["numErrors"] == 0, gltf_validator.summary(report)
    assert report["issues"]["numWarnings"] == 0, gltf_validator.summary(report)
    assert report["info"]["hasTextures"] and report["info"]["totalTriangleCount"] == result["stats"]["faces"]


def test_glb_material_and_attributes(torus_export):
    _, _, result = torus_export
    gltf, arrays, image = read_glb(result["files"]["glb"])
    pbr = gltf["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0
    assert image.shape == (512, 512, 3)
    assert arrays["POSITION"].shape == arrays["NORMAL"].shape == (result["stats"]["vertices"], 3)
    np.testing.assert_allclose(np.linalg.norm(arrays["NORMAL"], axis=1), 1.0, atol=1e-5)
    # y-up, world units: the torus (major radius 0.5 around the y axis) lies flat in x-z
    ext = arrays["POSITION"].max(0) - arrays["POSITION"].min(0)
    assert ext[1] < 0.6 * ext[0] and abs(ext[0] - ext[2]) < 0.02


def test_glb_reloads_in_trimesh_with_texture(torus_export):
    trimesh = pytest.importorskip("trimesh")
    field, _, result = torus_export
    scene = trimesh.load(result["files"]["glb"], process=False)
    (mesh,) = scene.geometry.values() if hasattr(scene, "geometry") else (scene,)
    assert len(mesh.vertices) == result["stats"]["vertices"] and len(mesh.faces) == result["stats"]["faces"]
    assert mesh.visual.material.baseColorTexture is not None
    # trimesh converts glTF UVs back to its (OBJ, v-up) convention: its texture lookup must give the albedo
    colors = mesh.visual.to_color().vertex_colors[:, :3] / 255.0
    expected = field.albedo(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)).numpy()
    assert np.abs(colors - expected).mean() < 0.05


def test_obj_reloads_in_trimesh_with_texture(torus_export):
    trimesh = pytest.importorskip("trimesh")
    field, _, result = torus_export
    mesh = trimesh.load(result["files"]["obj"], process=False, maintain_order=True)
    assert len(mesh.faces) == result["stats"]["faces"]
    assert mesh.visual.material.image is not None
    colors = mesh.visual.to_color().vertex_colors[:, :3] / 255.0
    expected = field.albedo(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)).numpy()
    assert np.abs(colors - expected).mean() < 0.05


def test_baked_texture_matches_albedo_in_gltf_orientation(torus_export):
    """Sample the GLB's texture at surface points with glTF's convention (row = v·H) and compare to the field."""
    field, _, result = torus_export
    _, arrays, image = read_glb(result["files"]["glb"])
    pos, uv, faces = arrays["POSITION"], arrays["TEXCOORD_0"].astype(np.float64), arrays["indices"]
    f, bary, pts = surface_samples(pos, faces, 4000)
    uvp = np.einsum("nk,nkc->nc", bary, uv[faces[f]])
    h, w = image.shape[:2]
    got = bilinear(image, uvp[:, 0] * w, uvp[:, 1] * h)
    expected = field.albedo(torch.as_tensor(pts, dtype=torch.float32)).numpy()
    err = np.abs(got - expected).mean()
    assert err < 0.02
    assert np.percentile(np.abs(got - expected).max(1), 99) < 0.05  # no seam bleeding
    # the check can fail: the same lookup with V flipped (OBJ's convention) is far off
    flipped = bilinear(image, uvp[:, 0] * w, (1 - uvp[:, 1]) * h)
    assert np.abs(flipped - expected).mean() > 3 * max(err, 0.02)


def test_mesh_fidelity_iou_and_topology(torus_export):
    field, _, result = torus_export
    _, arrays, _ = read_glb(result["files"]["glb"])
    pos, faces = arrays["POSITION"].astype(np.float64), arrays["indices"]
    occ_mesh = parity_occupancy(pos, faces, 64)
    occ_field = (field.density(cell_centres(64).reshape(-1, 3)) > result["stats"]["level"]).reshape(64, 64, 64)
    assert iou(occ_mesh, occ_field.numpy()) >= 0.95
    # closed, outward, genus 1 (welding the UV seams back): Euler characteristic 0
    _, inverse = np.unique(np.round(pos, 6), axis=0, return_inverse=True)
    welded = inverse.reshape(-1)[faces]
    assert euler_characteristic(welded) == 0
    assert result["stats"]["watertight"] and result["stats"]["volume"] > 0
    # vertex normals point out of the tube (along the SDF gradient)
    x = torch.as_tensor(pos, dtype=torch.float32).requires_grad_(True)
    (grad,) = torch.autograd.grad(sdf("torus", x).sum(), x)
    cos = (torch.nn.functional.normalize(grad, dim=-1).numpy() * arrays["NORMAL"]).sum(1)
    assert (cos > 0.9).mean() > 0.99


@pytest.mark.parametrize("bound", [1.0, 2.0])
def test_level_matches_the_rendered_opacity_silhouette(bound):
    """Soft sphere: the surface must sit where a grazing ray's opacity reaches 0.5 (float64 quadrature), not at
    the SDF's zero (R = 0.6) nor at half the maximum density; in a unit box and in a larger one."""
    from scipy.integrate import quad
    from scipy.optimize import brentq

    dmax, eps = 100.0, 0.02
    field = Field("sphere", density_max=dmax, sharpness=eps, bound=bound)

    def optical_depth(rho: float) -> float:
        sig = lambda t: dmax / (1.0 + math.exp((math.hypot(rho, t) - SPHERE_R) / eps))  # noqa: E731
        return 2.0 * quad(sig, 0.0, 2.0, limit=200, points=[math.sqrt(max(SPHERE_R**2 - rho**2, 0.0))])[0]

    rho = brentq(lambda r: optical_depth(r) - math.log(2.0), SPHERE_R - 0.1, 1.0)
    assert rho - SPHERE_R > 0.05  # the test tells the two candidate surfaces apart
    surf = extract_surface(field, 128, max_faces=0, smooth_iterations=0)
    radius = np.linalg.norm(surf.vertices, axis=1)
    cell = 2.0 * bound / 128
    assert abs(radius.mean() - rho) < 0.25 * cell
    assert radius.std() < 0.1 * cell
    assert surf.stats["silhouette_iou"] > 0.99


def test_level_from_rays_picks_the_best_cut():
    ray_max = torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0, 0.0])
    alpha = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.0, 0.0])
    choice = level_from_rays(alpha, ray_max)
    assert math.isclose(choice.level, math.sqrt(24.0), rel_tol=1e-9)
    assert choice.silhouette_iou == 1.0 and choice.opaque_rays == 3
    # a noisy ray (opaque but low max) costs IoU: the cut that keeps it (below 2) has IoU 4/5, the cut above
    # it 3/4: the best cut still excludes the empty rays and includes the noisy one
    alpha2 = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.6, 0.0])
    choice2 = level_from_rays(alpha2, ray_max)
    assert math.isclose(choice2.level, 1.0) and math.isclose(choice2.silhouette_iou, 0.8)


def test_views_integrate_a_constant_box_exactly():
    c, bound = 0.3, 1.0
    grid = torch.full((33, 33, 33), c)
    alpha, ray_max = axis_views(grid, bound)
    np.testing.assert_allclose(alpha.numpy(), 1 - math.exp(-c * 2 * bound), rtol=1e-5)
    assert torch.all(ray_max == c)
    alpha_d, max_d = march_views(grid, bound, samples_per_side=64, directions=((1.0, 1.0, 1.0),))
    # the central ray of the diagonal view crosses the box along its full diagonal, 2·√3·bound long
    assert abs(alpha_d.max().item() - (1 - math.exp(-c * 2 * math.sqrt(3) * bound))) < 0.02


def test_coarse_to_fine_grid_equals_dense_evaluation_near_the_surface():
    field = Field("torus", density_max=300.0, sharpness=0.01)
    level, bound, cpu = 20.0, 1.0, torch.device("cpu")
    coarse = coarse_density_grid(field, 32, bound, cpu)
    fine, queries = refine_density_grid(field, coarse, level, 2, bound, cpu)
    dense = coarse_density_grid(field, 64, bound, cpu)
    assert queries < 0.5 * dense.numel()
    crossing = cells_crossing(dense, level)
    # every corner of every cell that the dense grid sees crossing the level was queried exactly
    corners = torch.zeros_like(dense, dtype=torch.bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corners[dx:dx + 64, dy:dy + 64, dz:dz + 64] |= crossing
    torch.testing.assert_close(fine[corners], dense[corners])
    assert torch.equal(cells_crossing(fine, level), crossing)
    v1, f1 = marching_cubes(fine.numpy(), level, bound)
    v2, f2 = marching_cubes(dense.numpy(), level, bound)
    assert f1.shape == f2.shape
    np.testing.assert_allclose(np.sort(v1, axis=0), np.sort(v2, axis=0), atol=1e-6)


def test_cube_surface_is_closed_outward_and_faithful():
    field = Field("cube")
    surf = extract_surface(field, 96, max_faces=4000)
    assert surf.faces.shape[0] <= 4000 and surf.stats["watertight"]
    assert euler_characteristic(surf.faces) == 2
    assert surf.stats["volume"] > 0
    occ_mesh = parity_occupancy(surf.vertices, surf.faces, 64)
    occ_field = (field.density(cell_centres(64).reshape(-1, 3)) > surf.level).reshape(64, 64, 64).numpy()
    assert iou(occ_mesh, occ_field) >= 0.95
    # every face normal points away from the cube's centre
    tri = surf.vertices[surf.faces].astype(np.float64)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((fn * tri.mean(1)).sum(1) > 0).all()


def test_folded_face_pairs_are_dropped_and_closedness_restored():
    from dream3d.export.surface import drop_folded_faces, is_closed

    octahedron = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    fin = np.array([[0, 1, 4], [1, 0, 4]])  # two faces on one vertex triple, as decimation can leave
    broken = np.concatenate([octahedron, fin])
    assert is_closed(octahedron) and not is_closed(broken)
    fixed = drop_folded_faces(broken)
    assert is_closed(fixed) and np.array_equal(fixed, octahedron)


def test_floaters_are_removed():
    field = Field("sphere", floater=(0.8, 0.8, 0.8, 0.08))
    kept = extract_surface(field, 64, max_faces=0, min_component_fraction=0.0)
    assert kept.stats["components_kept"] == 2 and kept.stats["components_removed"] == 0
    cleaned = extract_surface(field, 64, max_faces=0)
    assert cleaned.stats["components_kept"] == 1 and cleaned.stats["components_removed"] == 1
    assert np.linalg.norm(cleaned.vertices, axis=1).max() < SPHERE_R + 0.05
    assert euler_characteristic(cleaned.faces) == 2


class _Empty(torch.nn.Module):
    bound = 1.0

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.value)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3)


@pytest.mark.parametrize("value", [0.0, 1e-3, float("nan")], ids=["zero", "faint", "nan"])
def test_empty_or_broken_field_is_a_one_line_error(tmp_path, value):
    with pytest.raises(Dream3DError) as err:
        export_geometry(_Empty(value), tmp_path, resolution=32, texture_size=64)
    assert "\n" not in str(err.value) and str(err.value).startswith("cannot export")
    assert not list(tmp_path.iterdir())


def test_bad_arguments_are_errors(tmp_path):
    field = Field("sphere")
    with pytest.raises(Dream3DError, match="unknown export format"):
        export_geometry(field, tmp_path, formats=("fbx",))
    with pytest.raises(Dream3DError, match="divisible"):
        export_geometry(field, tmp_path, resolution=33)
    with pytest.raises(Dream3DError, match="texture size"):
        export_geometry(field, tmp_path, texture_size=4)


def test_uv_rasterizer_covers_the_square_with_exact_barycentrics():
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    h, w = 12, 20
    face_index, bary = rasterize_uv(uvs, faces, h, w)
    assert (face_index >= 0).all()
    rows, cols = np.mgrid[0:h, 0:w]
    uv_texel = np.einsum("hwk,hwkc->hwc", bary, uvs[faces[face_index]])
    # texel (row, col) has its centre at u = (col + 0.5)/W, v = 1 − (row + 0.5)/H (row 0 is the top, v = 1)
    np.testing.assert_allclose(uv_texel[..., 0], (cols + 0.5) / w, atol=1e-12)
    np.testing.assert_allclose(uv_texel[..., 1], 1 - (rows + 0.5) / h, atol=1e-12)
    # the lower-right triangle (below the diagonal in uv, v small) lands in the bottom-right of the image
    assert face_index[-1, -1] == 0 and face_index[0, 0] == 1


def test_turntable_mp4_and_gif(tmp_path):
    import imageio.v3 as iio

    seen = []

    def render(cams):
        seen.append(cams.azimuth_deg.clone())
        b = len(cams)
        rgb = torch.empty(b, 3, 33, 48)  # odd height: the MP4 writer pads to even sizes
        rgb[:, 0] = ((cams.azimuth_deg + 180) / 360)[:, None, None]
        rgb[:, 1] = 0.2
        rgb[:, 2] = (cams.elevation_deg / 90)[:, None, None]
        return rgb

    n = 12
    files = write_turntable(render, tmp_path / "turntable.mp4", tmp_path / "turntable.gif", n_frames=n,
                            elevation_deg=30.0, fps=12, batch_size=5)
    torch.testing.assert_close(torch.cat(seen), orbit_cameras(n, 30.0).azimuth_deg)
    expected_red = ((orbit_cameras(n).azimuth_deg + 180) / 360).numpy()
    mp4 = np.stack(list(iio.imiter(files["mp4"])))
    assert mp4.shape[0] == n and mp4.shape[1:3] == (34, 48)
    np.testing.assert_allclose(mp4[:, 16, 24, 0] / 255.0, expected_red, atol=0.05)
    np.testing.assert_allclose(mp4[:, 16, 24, 2] / 255.0, 30 / 90, atol=0.05)
    gif = np.stack(list(iio.imiter(files["gif"])))
    assert gif.shape[0] == n and gif.shape[1:3] == (33, 48)
    np.testing.assert_allclose(gif[:, 16, 24, 0] / 255.0, expected_red, atol=0.03)


def test_export_never_imports_a_prior(tmp_path):
    code = f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_export import Field
from dream3d.export import export_geometry
export_geometry(Field("sphere"), {str(tmp_path)!r}, resolution=32, texture_size=64)
bad = [m for m in sys.modules if m.split(".")[0] in ("diffusers", "transformers") or m.startswith("dream3d.priors")]
assert not bad, bad
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
