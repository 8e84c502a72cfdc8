"""``python -m nst_lightning.video``: the command's entry point (nst_lightning.apps.video)."""

from nst_lightning.apps.video import main

if __name__ == "__main__":
    raise SystemExit(main())
