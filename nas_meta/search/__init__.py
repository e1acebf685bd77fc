"""Search: the objective (objective.py), the study (study.py: storage, samplers, pruners), regularized
evolution (evolution.py), the search loop (runner.py) and its progress display (progress.py).

Import from the submodules, e.g. ``from nas_meta.search.runner import run_search``.
"""
