"""``python -m infra``: the same command line as ``studentwork``."""

from infra.cli import main

if __name__ == "__main__":
    main()
