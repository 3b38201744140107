"""Ways to damage a checkpoint folder, shared by the hostile-input tests."""

from pathlib import Path

DAMAGES = ("cut", "empty", "header", "flip", "meta", "meta-binary")


def damage_checkpoint(folder: Path, how: str) -> None:
    """Damage the checkpoint in `folder` as `how` says (one of DAMAGES)."""
    t = folder / "tensors.safetensors"
    data = t.read_bytes()
    if how == "cut":
        t.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        t.write_bytes(b"")
    elif how == "header":
        t.write_bytes(b"\xff" * 8 + data[8:])
    elif how == "flip":  # same size, one byte changed: only the checksum sees it
        t.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif how == "meta":
        (folder / "meta.json").write_text("{garbage")
    elif how == "meta-binary":
        (folder / "meta.json").write_bytes(b"\x80\x81\x82")
    else:
        raise ValueError(how)
