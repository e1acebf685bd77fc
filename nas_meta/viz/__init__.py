"""Pictures: architectures and spaces (arch.py), plots of studies (study.py), one style (style.py).

A leaf of the package: it reads graphs and studies, and nothing below it imports it.
"""
