"""The client core: a socket thread that feeds a queue; no tkinter here."""
