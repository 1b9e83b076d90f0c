"""Placeholder: being written (safe checkpoint loading)."""


def load_checkpoint(path, variant=None):  # pragma: no cover - replaced
    raise NotImplementedError


def load_weights_into(model, path):  # pragma: no cover - replaced
    raise NotImplementedError
