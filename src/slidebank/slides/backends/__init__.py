"""Reader backends, one module each, all with the constructor ``Backend(files)``."""
