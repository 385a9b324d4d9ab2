"""The Tkinter interface; the only package that imports tkinter."""
