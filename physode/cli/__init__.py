"""The command line: a thin click layer over physode's Python API."""
