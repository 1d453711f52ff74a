"""Pure rules of the product, no I/O: they are what the rest of the code agrees on."""
