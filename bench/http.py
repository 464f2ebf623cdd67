"""W1 runs triggered over HTTP (``make bench-http``); the code is in bench/http_triggers.py.

Python puts a script's folder first on ``sys.path``, so for every script in
bench/ this file's name hides the standard library's ``http`` package, which
httpx and Starlette import. Imported as ``http``, this file therefore loads the
standard library's package and puts it in its own place in ``sys.modules``
(where the import system picks it up); run as a script, it runs the benchmark.
"""

from __future__ import annotations

import sys


def _hand_over_to_the_standard_library() -> None:
    """Load the standard library's ``http`` package and make it ``sys.modules["http"]``."""
    import importlib.machinery
    import importlib.util
    import os

    spec = importlib.machinery.PathFinder.find_spec("http", [os.path.dirname(os.__file__)])
    if spec is None or spec.loader is None:
        raise ImportError("the standard library's http package was not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["http"] = module
    spec.loader.exec_module(module)


if __name__ == "http":
    _hand_over_to_the_standard_library()
elif __name__ == "__main__":
    from http_triggers import main

    main()
