"""Pure array functions (NumPy on CPU, CuPy on GPU) for scores, hashes, motion and shots."""
