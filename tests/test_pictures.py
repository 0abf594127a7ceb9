"""svrt.pictures: PNGs drawn without touching the session's matplotlib backend (notebooks keep theirs)."""

import re
from pathlib import Path

import numpy as np

from svrt.pictures import save_png, subplots

ROOT = Path(__file__).resolve().parents[1]


def test_writing_pictures_leaves_the_session_backend_alone(tmp_path):
    import matplotlib

    from svrt.scenes import plot_scenes

    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)          # what a notebook or GUI session would have chosen
    try:
        plot_scenes(tmp_path / "scenes.png", size=32)
        fig, ax = subplots(1, 2, figsize=(3, 2), layout="constrained")
        ax[1].imshow(np.eye(4))
        save_png(fig, tmp_path / "two.png", dpi=50)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before, force=True)
    for name in ("scenes.png", "two.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary left behind


def test_no_library_module_switches_the_backend():
    # benchmarks/peers.py is another branch's file for now (docs/ARCHITECTURE.md, next steps)
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("svrt", "runtime", "trainer", "export", "kernels", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
        if p.name != "peers.py" and re.search(r"matplotlib\.use\(|import matplotlib\.pyplot", p.read_text())
    ]
    assert offenders == []
