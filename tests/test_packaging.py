"""mm_st as users install it: a wheel built from this checkout, installed into a fresh virtual environment, still finds
its package data (the card templates of the top-level hub_cards/ folder, shipped as mm_st.hub_cards)."""

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RENDER = textwrap.dedent("""
    import mm_st
    from mm_st.synthesis.config import SynthesisConfig
    from mm_st.synthesis.export import render_card
    from mm_st.synthesis.runner import summarize

    print(mm_st.__file__)
    print(render_card(SynthesisConfig(num_samples=1, seed=5), summarize([], {}, "wheel-check"), ["VQA"], {"VQA": 0}, "from-wheel"))
""")


@pytest.mark.slow
def test_wheel_ships_hub_cards_and_renders_the_dataset_card(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("mm_st-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())  # fmt: skip
    # mm_st from the wheel only; its dependencies from the test environment (a path entry: its .pth hooks, such as
    # the editable mm_st finder, are not run).
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True)  # fmt: skip
    (site / "test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([python, "-c", RENDER], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    module_file, card = result.stdout.split("\n", 1)
    assert Path(module_file).is_relative_to(site)
    assert "Generator model: `wheel-check`" in card and "config_name: VQA" in card
    assert (site / "mm_st" / "hub_cards" / "mme5_synthetic_dataset_card.md.jinja").is_file()
    assert (site / "mm_st" / "hub_cards" / "model_card.md.jinja").is_file()  # mm_st.hub's model card
    assert (site / "mm_st_mteb.pth").is_file()  # the mteb start-up hook ships too
