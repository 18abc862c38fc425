"""Allow ``python -m sesrx``; also the ``sesrx`` command."""

import os
import signal
import sys

EXIT_INTERRUPTED = 128 + 2  # as a shell reports a command ended by SIGINT


def run() -> None:
    """Run the command line; a Ctrl+C before the server listens ends it quietly."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell starts a background job (``sesrx serve &``) with SIGINT
        # ignored; sesrx stops on it once it serves, so it does while it
        # starts too, rather than losing a Ctrl+C or ``kill -INT`` sent then.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # Imported here, so that an interrupt while the modules load is caught.
        from sesrx.cli import main

        code = main()
    except KeyboardInterrupt:
        print("sesrx: interrupted", file=sys.stderr)
        sys.stderr.flush()
        # Leave at once: an interrupt that landed in code Python generates
        # with exec (dataclasses make methods so) would otherwise, handled or
        # not, end the process by SIGINT at exit, and no start-up step has
        # anything to finish.
        os._exit(EXIT_INTERRUPTED)
    sys.exit(code)


if __name__ == "__main__":
    run()
