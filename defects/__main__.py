"""`python -m defects ...` runs the command-line tools (see defects.cli)."""

from defects.cli import main

main()
