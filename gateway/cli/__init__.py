"""The `edge-gateway` command line: `main` parses the arguments and each subcommand has its
own module here (analyze, demo, example, status, tickets). Only `main` imports `gateway.app`."""
