"""A model kind outside the library, in the same layout as the built-in ones (kind.py,
net.py, module.py, predictor.py, export.py): an image-level multi-label classifier that
test_kinds_interface drives through every entry point."""
