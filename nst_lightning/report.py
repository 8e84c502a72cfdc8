"""``python -m nst_lightning.report``: the command's entry point (nst_lightning.results.report)."""

from nst_lightning.results.report import main

if __name__ == "__main__":
    raise SystemExit(main())
