"""The parts of benchmarks/run.py, one module each. Each part that ``--only`` names has ``measure(settings, inputs)``
(its entry under ``details`` in results.json), ``headline(details)`` (its top-level keys) and ``rows(results)`` (its
lines of the table); gpu.py is the ``--gpu`` run, with its own JSON."""
