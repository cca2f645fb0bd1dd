"""Reading a pickle someone else made without running what it says.

A pickle is a program: `pickle.load` calls whatever callables it names (`os.system` among them). The
feature files of this field (MMSA's processed files, MulT's) hold only dicts, lists, tuples, strings,
numbers and numpy arrays, so `safe_load` builds exactly those: every global the file names must be one of
ALLOWED (both spellings of numpy's modules: files written under numpy 1 say `numpy.core`, under numpy 2
`numpy._core`; `_frombuffer` for protocol 5, `_codecs.encode` for protocol 2), and anything else stops
the load at that global, before it is called. Python 2 pickles are read with latin-1 strings (their arrays'
bytes). Nothing is written anywhere.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from mmolre import MmolreError

_NUMPY_CORE = {"multiarray": np._core.multiarray, "numeric": np._core.numeric}
ALLOWED = {
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("_codecs", "encode"): codecs.encode,
    **{(f"{package}.{module}", name): getattr(_NUMPY_CORE[module], name)
       for package in ("numpy.core", "numpy._core")
       for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))},
}
NUMPY_DTYPES = "numpy.dtypes"  # numpy 2's dtype classes (np.dtypes.Float32DType ...) appear in some protocol-5 files


class RefusedPickle(MmolreError):
    """The pickle names a global outside ALLOWED."""


def what_to_do(module: str, name: str) -> str:
    if module.startswith("torch"):
        return ("it holds torch tensors: re-save it with numpy arrays (e.g. `{k: v.numpy() for ...}` per split, "
                "then pickle.dump), and import that copy")
    if module.startswith("pandas"):
        return "it holds pandas objects: re-save the columns as numpy arrays"
    if module.endswith("\r"):
        return "it was written in text mode on Windows: copy it again in binary mode"
    return ("mmolre reads only dicts, lists, tuples, strings, numbers and numpy arrays; do not open this file with "
            "pickle.load unless you trust whoever made it")


class _Restricted(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        found = ALLOWED.get((module, name))
        if found is None and module == NUMPY_DTYPES and name.endswith("DType"):
            found = getattr(np.dtypes, name, None)
        if found is None:
            raise RefusedPickle(f"{self.path}: refused: the pickle calls {module.strip()}.{name}, which is not a "
                                f"container or numpy array; nothing was run: {what_to_do(module, name)}")
        return found

    def persistent_load(self, pid):
        raise RefusedPickle(f"{self.path}: refused: the pickle refers to external storage (persistent id "
                            f"{str(pid)[:40]!r}, as torch.save writes); nothing was run: re-save it with numpy arrays")


def safe_load(path: Path):
    """The object in the pickle at `path`, built from allowed types only; RefusedPickle naming the first other
    global, MmolreError for a file that is no pickle (a torch.save zip archive among them)."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):
            raise RefusedPickle(f"{path}: refused: a zip archive (torch.save's format), not a pickle; load it in "
                                "torch, convert the tensors to numpy arrays and pickle.dump the dict")
        f.seek(0)
        try:
            return _Restricted(f, path).load()
        except RefusedPickle:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                UnicodeDecodeError) as e:
            raise MmolreError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); it may be truncated: "
                              "copy it again") from None
