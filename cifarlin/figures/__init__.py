"""Figures with matplotlib: the drawing (``plots``), what to draw for a run or a comparison
(``make``) and the child process that draws them off the training's critical path (``drawer``)."""
