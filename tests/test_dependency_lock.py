"""The committed lock and pyproject's ranges agree: every locked direct dependency lies in its range, and each lower
bound is the locked (tested) version or below it; the environment the tests run in is the lock."""

import os
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s]+)", (ROOT / "requirements.lock").read_text(), flags=re.M)
    return {canonicalize_name(name): ver for name, ver in pins}


def _direct() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_direct_dependency_is_locked_inside_its_range():
    locked = _locked()
    for requirement in _direct():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(locked[name]), f"locked {name}=={locked[name]} is outside {requirement}"


def test_transformers_5_24_is_excluded_and_lower_bounds_are_tested_versions():
    ranges = {canonicalize_name(r.name): r.specifier for r in _direct()}
    assert not ranges["transformers"].contains("5.24.0")  # refuses every released peft (needs >= 0.22)
    assert not ranges["peft"].contains("0.13.0")  # never tested
    locked = _locked()
    for name in ("transformers", "sentence-transformers", "peft", "datasets", "mteb"):
        lower = [Version(s.version) for s in ranges[name] if s.operator == ">="]
        tested = Version(locked[name])
        assert lower and lower[0] <= tested and lower[0].release[:2] == tested.release[:2], (name, lower, tested)


@pytest.mark.parametrize("name", ["transformers", "peft", "sentence-transformers", "mteb", "datasets", "torch"])
def test_installed_versions_are_the_locked_ones(name):
    if name == "torch" and os.environ.get("MM_ST_TORCH"):
        pytest.skip("MM_ST_TORCH replaces the locked torch")
    installed = version(name).split("+")[0]
    assert installed == _locked()[canonicalize_name(name)], "the test environment was not built from requirements.lock"


def test_openai_backend_names_the_pyproject_requirement():
    from mm_st.synthesis.backends import OPENAI_REQUIREMENT

    direct = {canonicalize_name(r.name): str(r) for r in _direct()}
    assert Requirement(OPENAI_REQUIREMENT).specifier == Requirement(direct["openai"]).specifier
    assert Requirement(direct["openai"]).specifier.contains(_locked()["openai"])
