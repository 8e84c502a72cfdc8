"""The images a run reads: files and built-in names, the generated painting, and their preparation."""
