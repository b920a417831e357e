"""Test-session set-up shared by every test module."""

import signal

# A test run started in the background of a non-interactive shell (`pytest &`) inherits SIGINT
# *ignored*: Python then installs no KeyboardInterrupt handler, and the processes the tests start
# keep ignoring it (an ignored signal stays ignored across exec), so the Ctrl-C tests would fail
# for a reason that is not the code's. Restore a terminal's behaviour for this process and, since
# a handled signal is reset to the default at exec, for its children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# submitit sets up its logging when first imported, and that closes the handler absl installed
# (absl comes with optax). Imported inside a test that captures output, the closed handler is
# pytest's capture stream and the session crashes ("I/O operation on closed file"); imported
# here, before any capture, it is harmless.
import qam_lite.experiments.sweep  # noqa: E402, F401
