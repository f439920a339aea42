"""Pure, I/O-free building blocks shared by the control and data planes."""
