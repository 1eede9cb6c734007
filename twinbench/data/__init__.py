"""CIFAR-10 for both frameworks: find it, verify it, decode it once, hand out NumPy splits.

Two on-disk layouts are accepted:

- canonical: the ``cifar-10-batches-py`` release (data_batch_1..5, test_batch, batches.meta),
  each file md5-verified *before* it is unpickled (unpickling runs arbitrary code);
- imagefolder: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg`` (also .jpeg/.png), e.g. the
  JPEG re-encoded copy CI uses (docs/methodology.md#data).

Every split comes out the same way: uint8 NHWC images (N, 32, 32, 3), C-contiguous, and int64
labels in the label order of ``batches.meta`` (CLASSES). Framework adapters convert from there.

Bad input is never loaded partially: every problem is a DatasetError that names the file or
directory and what is wrong with it, raised by ``resolve_source`` before any test runs.

One module per job: cifar10 (constants and types), canonical (the batch files), imagefolder
(scan, digest, decode), cache (the decoded-array cache), splits (the val split), download (the
default copy, by urllib + tarfile: no framework is imported anywhere here) and sources (the two
entry points below). Pure NumPy + Pillow + stdlib.
"""
from twinbench.data.cache import CACHE_FORMAT, ENTRY_PREFIX, default_cache_dir
from twinbench.data.canonical import (CANONICAL_MD5, NAME_CANONICAL, NAME_CUSTOM_CANONICAL,
                                      TRAIN_BATCHES, canonical_digest)
from twinbench.data.cifar10 import (CANONICAL_DIRNAME, CIFAR10_COUNTS, CLASSES, IMAGE_SHAPE,
                                    LAYOUT_HELP, SPLITS, Dataset, DatasetError, DataSource,
                                    Progress)
from twinbench.data.download import (CANONICAL_TGZ_MD5, CANONICAL_URL, URL_ENV,
                                     default_data_dir, download_canonical)
from twinbench.data.imagefolder import (CIFAR10_JPEG_DIGEST, IMAGE_SUFFIXES, JUNK_FILES, NAME_JPEG,
                                        NAME_UNKNOWN_FOLDER, imagefolder_digest)
from twinbench.data.sources import load_split, resolve_source
from twinbench.data.splits import VAL_SEED, val_indices

__all__ = [
    "CACHE_FORMAT", "CANONICAL_DIRNAME", "CANONICAL_MD5", "CANONICAL_TGZ_MD5", "CANONICAL_URL",
    "CIFAR10_COUNTS", "CIFAR10_JPEG_DIGEST", "CLASSES", "ENTRY_PREFIX", "IMAGE_SHAPE",
    "IMAGE_SUFFIXES", "JUNK_FILES", "LAYOUT_HELP", "NAME_CANONICAL", "NAME_CUSTOM_CANONICAL",
    "NAME_JPEG", "NAME_UNKNOWN_FOLDER", "SPLITS", "TRAIN_BATCHES", "URL_ENV", "VAL_SEED",
    "DataSource", "Dataset", "DatasetError", "Progress", "canonical_digest", "default_cache_dir",
    "default_data_dir", "download_canonical", "imagefolder_digest", "load_split",
    "resolve_source", "val_indices",
]
