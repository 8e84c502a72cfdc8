"""``python -m nst_lightning.video``: the command's entry point (nst_lightning.apps.video)."""

from nst_lightning.util import interrupts

interrupts.install()  # first of all: a Ctrl-C while the libraries load is recorded, never lost (see interrupts)

from nst_lightning.apps.video import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
