"""Search: from a space and a config to a study of trained candidates and a pick.

- ``runner.py``: run, resume or join a search (``run_search``, ``run_worker``), its outputs;
- ``objective.py``: one trial (build, meta-train, score; common random numbers, duplicates);
- ``study.py``: storage, naming, the stored config;
- ``samplers.py``: the sampler and pruner registries, successive halving's rungs;
- ``workers.py``: many processes on one study (recovery, the storage retry, exhausted spaces);
- ``race.py``: the final race of the best candidates against the baselines;
- ``evolution.py``, ``local.py``: regularized evolution and local search as Optuna samplers;
- ``screening.py`` and ``proxies.py``: ``--prescreen`` by training-free scores;
- ``supernet.py``: ``--strategy supernet`` / ``darts`` (the shared network, inherited weights);
- ``fidelity.py``: budgets read off one run (the fidelity bench's library part);
- ``progress.py``: the progress display.

Import from the submodules, e.g. ``from nas_meta.search.runner import run_search``.
"""
