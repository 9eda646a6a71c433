"""Packages, plus what pyproject.toml cannot say: the top-level ``hub_cards/`` folder is shipped as the package
``mm_st.hub_cards`` (card templates read through importlib.resources, so they work from a wheel too), and mm_st's
mteb start-up hook goes to the top of site-packages: ``mm_st_mteb.pth`` + ``_mm_st_mteb_hook.py``.

Metadata lives in pyproject.toml; for the hook (see
``mm_st/evaluation/_hook.py``). A regular wheel gets them from ``build_lib``; an editable install
(``pip install -e .``, PEP 660) gets them in the editable wheel, which setuptools assembles in ``install_lib``.
After editing ``_hook.py``, re-run ``pip install -e .``: the installed file is a copy (scripts/env.sh rebuilds its
environment when this file changes; the hook calls ``mm_st.evaluation.registry.register()``).
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HOOK = {"mm_st_mteb.pth": "mm_st/evaluation/mm_st_mteb.pth", "_mm_st_mteb_hook.py": "mm_st/evaluation/_hook.py"}


class build_py_with_mteb_hook(build_py):
    def run(self):
        super().run()
        target = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        for name, source in HOOK.items():
            self.copy_file(source, str(Path(target, name)), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), *(str(Path(self.build_lib, name)) for name in HOOK)]


setup(
    packages=[*find_packages(include=["mm_st", "mm_st.*"]), "mm_st.hub_cards"],
    package_dir={"mm_st.hub_cards": "hub_cards"},
    cmdclass={"build_py": build_py_with_mteb_hook},
)
