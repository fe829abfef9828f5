"""The version of bnfast: the one place it is written.

pyproject.toml reads it statically at build time
(``[tool.setuptools.dynamic] version = {attr = ...}``: setuptools parses
this file's assignment without importing bnfast, so keep it a plain string
literal); ``bnfast.__version__`` and ``show_config`` import it.
"""

__version__ = "0.2.0"
