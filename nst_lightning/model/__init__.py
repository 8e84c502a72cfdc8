"""The math: networks, the paper's losses, style statistics and the objective. Tensors and modules in, tensors out;
nothing here reads a config."""
