"""The analysis modes, one module each; :mod:`permenrich.api` is their public face."""
