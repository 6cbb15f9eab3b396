"""`python -m app.cli`: the same as the `rafale` command."""

from app.cli.root import main

if __name__ == "__main__":
    main()
