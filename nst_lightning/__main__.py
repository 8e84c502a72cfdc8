"""``python -m nst_lightning key=value ...``: the Hydra app (nst_lightning.apps.cli)."""

from nst_lightning.apps.cli import main

if __name__ == "__main__":
    main()
