"""contrib's `python/layers/`: `core_layers`, `layers`, `rnn_cells`."""
