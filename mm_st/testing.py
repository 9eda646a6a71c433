"""The name tests, doctests and the docs use for :mod:`mm_st.tiny` (tiny random backbones of every family).

Every name of :mod:`mm_st.tiny` reads here too, the private helpers included (they are looked up there on use; patch
``mm_st.tiny`` itself to change one). ``_build`` and ``_chatml_template`` are :func:`mm_st.tiny.build` and
:func:`mm_st.tiny.chatml_template`.

Example:
    >>> from mm_st.testing import tiny_model
    >>> import mm_st.tiny
    >>> tiny_model is mm_st.tiny.tiny_model
    True
"""

from typing import Any

from mm_st.tiny import SPECS, TINY_FAMILIES, FamilySpec, SpecialTokens, __all__, build, chatml_template, tiny_model  # noqa: F401

_RENAMED = {"_build": "build", "_chatml_template": "chatml_template"}


def __getattr__(name: str) -> Any:
    from mm_st import tiny

    return getattr(tiny, _RENAMED.get(name, name))
