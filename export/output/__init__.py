"""The output directory: atomic file writing (``files``), the one commit step that changes
the directory (``commit``), what the directory already holds and whether a new export may
join it (``existing``), the manifest (``manifest``), and the metadata every artifact carries
(``metadata``).

Nothing is imported here: ``manifest`` and ``files`` are read on devices without torch.
"""
