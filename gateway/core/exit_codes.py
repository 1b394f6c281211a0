"""Process exit codes, one home for every command and the daemon.

They follow sysexits.h where it has a meaning for us; systemd's unit lists `EX_CONFIG` in
`RestartPreventExitStatus=`, so a bad configuration does not become a restart loop.
"""

from __future__ import annotations

EX_OK = 0
EX_USAGE_ARGPARSE = 2  # what argparse itself exits with on a bad argument
EX_USAGE = 64
EX_DATAERR = 65  # the input (a recording, a reading) is not usable
EX_NOINPUT = 66  # an input file (a recording, state.db) does not exist
EX_UNAVAILABLE = 69  # a needed service (the daemon's endpoint, a device, mosquitto) is missing
EX_CANTCREAT = 73  # an output file cannot be created (exists, or its folder does not)
EX_CONFIG = 78
# The reader of our output went away (`edge-gateway status | head`): what a shell reports for a
# process ended by SIGPIPE, as `yes | head` does, without a traceback.
EX_BROKEN_PIPE = 128 + 13
