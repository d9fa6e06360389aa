"""Whether an optional distribution (a data wheel, faiss) is installed, without importing it."""
import importlib.metadata


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
