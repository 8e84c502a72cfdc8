"""``python -m nst_lightning key=value ...``: the Hydra app (nst_lightning.apps.cli)."""

from nst_lightning.util import interrupts

interrupts.install()  # first of all: a Ctrl-C while the libraries load is recorded, never lost (see interrupts)

from nst_lightning.apps.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
