"""Entry point of an extraction worker process (see :mod:`curate.readers.worker`)."""

from curate.readers.worker import serve

if __name__ == "__main__":
    serve()
