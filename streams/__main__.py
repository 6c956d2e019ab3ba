"""``python -m streams``: the same command line as ``studentwork``."""

from streams.cli import main

main()
