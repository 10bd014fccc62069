"""The ``pipe`` task's data pieces: boxes -> coarse masks, label cleaning, mask refinement."""
