"""`python -m parrot`: the `parrot` command line (parrot/cli, in the parrot-serve distribution)."""
try:
    from parrot.cli import main
except ModuleNotFoundError as e:  # only the torch-free parrot-client is installed
    if e.name != "parrot.cli":
        raise
    raise SystemExit("`python -m parrot` is the server's command line: install parrot-serve "
                     "(docs/packages.md)") from None

raise SystemExit(main())
