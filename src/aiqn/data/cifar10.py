"""cifar10: CIFAR-10 (Krizhevsky 2009), 60,000 32x32 RGB images in 10 classes, the paper's split.

Raw file: the "python version" archive `cifar-10-python.tar.gz` (170,498,071 bytes, md5
c58f30108f718f92721af3b95e74349a, the checksum published on
https://www.cs.toronto.edu/~kriz/cifar.html), fetched into data/raw/cifar10/ by `ensure_raw_file`
(downloaded when absent; when this machine is offline, the error says where to put it by hand).

Members read (in memory, by their exact names; nothing is extracted to disk, so no archive
member can write anywhere):

    cifar-10-batches-py/data_batch_1 .. data_batch_5   train, 5 x 10,000 images
    cifar-10-batches-py/test_batch                     test, 10,000 images
    cifar-10-batches-py/batches.meta                   class names (b"label_names")

Each batch is a Python 2 pickle (read with encoding="bytes") of a dict whose b"data" is a
10000 x 3072 uint8 array: each row holds the 1024 red, then the 1024 green, then the 1024 blue
values of one image, each plane row-major 32x32, so a row reshaped to 3 x 32 x 32 is the image
in C x H x W order. b"labels" is a list of ints 0..9. The pickles are unpickled only after the
archive's checksum is verified, and with an unpickler that accepts nothing but numpy arrays.

The split is the official one: train = data_batch_1..5 in order (50,000), test = test_batch
(10,000). Images are uint8, N x 3 x 32 x 32, 256 levels; labels int64 0..9.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from aiqn.data.download import raw_file_record
from aiqn.data.registry import DatasetSpec, Source, register

ARCHIVE = Source(
    filename="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"{FOLDER}/data_batch_{i}" for i in range(1, 6))
TEST_BATCH = f"{FOLDER}/test_batch"
META = f"{FOLDER}/batches.meta"
SIZE, NUM_CLASSES = 32, 10

# what the batch pickles may reference, resolved in this numpy (Python 2 pickles name numpy.core, numpy 2
# calls it numpy._core): array reconstruction, and _codecs.encode, which protocol-2 pickles use for bytes
_RECONSTRUCT = np.array(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT, ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler for the CIFAR batches: plain containers and numpy arrays, nothing else."""

    def find_class(self, module: str, name: str) -> object:
        """The allowed global, or UnpicklingError."""
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (a CIFAR batch holds only arrays)")
        return _ALLOWED[(module, name)]


def read_members(path: str | Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of the named regular-file members of a (compressed) tarball, read in one pass,
    in memory. Raises FileNotFoundError naming the archive and the first missing member."""
    wanted, found = set(names), {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:  # one sequential pass: a gzip stream is never rewound
            if member.name in wanted and member.isfile():
                found[member.name] = tar.extractfile(member).read()
    for name in names:
        if name not in found:
            raise FileNotFoundError(
                f"{path} has no member {name}; it is not the CIFAR-10 python archive "
                f"({ARCHIVE.url}): delete it and download it again."
            )
    return found


def _unpickle(data: bytes, name: str, path: str | Path) -> dict:
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: member {name} is not a CIFAR-10 batch pickle ({error})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: member {name} holds a {type(batch).__name__}, not a dict")
    return batch


def _batch_arrays(batch: dict, name: str, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 3 x 32 x 32 uint8, labels int64 N) of one unpickled batch, checked."""
    if b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: member {name} lacks b'data' or b'labels' (keys: {sorted(batch)})")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE or len(labels) != len(data):
        raise ValueError(f"{path}: member {name} has data {data.dtype} {data.shape} and {len(labels)} labels; "
                         f"expected uint8 N x {3 * SIZE * SIZE} and N labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: member {name} has labels outside 0..{NUM_CLASSES - 1}")
    # each row: 1024 R, 1024 G, 1024 B, each plane row-major 32x32 -> C x H x W
    return data.reshape(-1, 3, SIZE, SIZE), labels


def read_cifar_archive(path: str | Path) -> tuple[dict, dict, list[str]]:
    """Read cifar-10-python.tar.gz in memory: (train, test, class names), where train and test are
    dicts with `images` (uint8 N x 3 x 32 x 32) and `labels` (int64 N); train = data_batch_1..5."""
    members = read_members(path, (*TRAIN_BATCHES, TEST_BATCH, META))
    train = [_batch_arrays(_unpickle(members[name], name, path), name, path) for name in TRAIN_BATCHES]
    test_images, test_labels = _batch_arrays(_unpickle(members[TEST_BATCH], TEST_BATCH, path), TEST_BATCH, path)
    meta = _unpickle(members[META], META, path)
    if b"label_names" not in meta:
        raise ValueError(f"{path}: member {META} lacks b'label_names'")
    names = [n.decode("ascii") if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    return ({"images": np.ascontiguousarray(np.concatenate([images for images, _ in train])),
             "labels": np.concatenate([labels for _, labels in train])},
            {"images": np.ascontiguousarray(test_images), "labels": test_labels}, names)


def prepare(raw_dir: Path, options: dict) -> tuple[dict, dict, dict]:
    """Verify (or download) the archive and read the official train/test split from it."""
    del options  # nothing to choose: the split is the official one
    raw = raw_file_record(ARCHIVE, raw_dir)
    path = Path(raw["path"])
    train, test, class_names = read_cifar_archive(path)
    provenance = {
        "raw_files": [raw],
        "source": "CIFAR-10 python version (Krizhevsky 2009), https://www.cs.toronto.edu/~kriz/cifar.html",
        "split": {"kind": "official", "train": [Path(n).name for n in TRAIN_BATCHES], "test": Path(TEST_BATCH).name,
                  "n_train": int(len(train["labels"])), "n_test": int(len(test["labels"]))},
        "classes": class_names,
    }
    return train, test, provenance


SPEC = register(DatasetSpec(
    name="cifar10", channels=3, height=SIZE, width=SIZE, levels=256, num_classes=NUM_CLASSES, prepare=prepare,
    sources=(ARCHIVE,), downloads=(ARCHIVE,),
    description="CIFAR-10: 32x32 RGB, 10 classes, official split (50,000 train / 10,000 test)",
    options=()))
