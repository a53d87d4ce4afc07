class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is shown to the user as it is."""
