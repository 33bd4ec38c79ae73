"""A from-scratch reverse-mode autograd engine on NumPy arrays."""
