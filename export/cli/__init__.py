"""The command line: ``partialnet-export`` itself (``main``), how the command-line tools end,
one line per failure with their exit codes (``errors``), and their progress lines on stderr
(``progress``); ``partialnet-bench`` uses the last two as well.

Nothing is imported here: the library (``partialnet.export.api``) reads ``errors`` without
the command's parser.
"""
