"""Jinja templates of the model and dataset cards mm_st writes (installed as the package ``mm_st.hub_cards``).

Example:
    >>> from importlib.resources import files
    >>> files("mm_st.hub_cards").joinpath("mme5_synthetic_dataset_card.md.jinja").is_file()
    True
"""
