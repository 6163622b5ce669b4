"""``mover``: the command line. A stable contract, documented in the README.

One module per command (``backup``, ``restore``, ``listing``, ``job``, ``run``, ``verify``,
``forget``, ``gc``, ``repair``), each with ``declare(sub, common)`` (every option of the
command, in one function) and ``run(args)`` (the options turned into typed settings, then the
job). ``main`` builds the parser and dispatches; ``runner`` owns the event loop, the signals,
logging and the error line. Exit status is the ``exit_code`` of the error class
(``mover.errors``); 0 on success. With ``--json`` the last line of stdout is one JSON object:
the result, or the error.
"""

from mover.cli.main import main, parser

__all__ = ["main", "parser"]
