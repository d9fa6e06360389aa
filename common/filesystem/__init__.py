"""One entry point to files on local disk and remote stores, through fsspec."""
from tml.common.filesystem.util import exists, glob, infer_fs, is_local_fs, open_file, strip_protocol

__all__ = ["exists", "glob", "infer_fs", "is_local_fs", "open_file", "strip_protocol"]
