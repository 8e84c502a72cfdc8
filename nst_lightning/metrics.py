"""``python -m nst_lightning.metrics``: the command's entry point (nst_lightning.results.metrics)."""

from nst_lightning.results.metrics import main

if __name__ == "__main__":
    raise SystemExit(main())
