"""Multi-model flows: the gated steel flow (and, later, pipe mask refinement)."""
