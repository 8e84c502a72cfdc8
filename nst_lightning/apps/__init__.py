"""The commands: ``python -m nst_lightning`` (cli), ``.video``, ``.report`` and ``.metrics``."""
