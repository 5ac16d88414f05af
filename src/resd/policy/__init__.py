"""The policy update (paper Alg. 1 lines 15-19): samples and contexts become update items, the
items one optimiser step (`update`), responses are scored as packed tensors (`packing`), and the
EMA self-teacher follows the student (`teacher`)."""
