"""``python -m streams``: the same command line as ``studentwork``."""

from streams.cli import main

if __name__ == "__main__":
    main()
