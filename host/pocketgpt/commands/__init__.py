"""One module per command-line verb: `add_parser(subparsers)` registers it, `run(args)` does it."""
