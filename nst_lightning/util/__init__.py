"""The bottom layer: one-line errors, atomic files, run folders. Imports nothing else of the package."""
