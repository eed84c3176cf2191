"""Dataset and split names, and the class names of the known datasets."""

from __future__ import annotations

from .errors import DataError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DATASETS",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "SPLITS",
    "check_name",
    "check_split",
]

#: Every dataset :func:`epdo.zoo.data.load_dataset` knows.
DATASETS = ("mnist-rot", "rotated-idx", "idx", "sample", "sample-upright", "cifar10", "cifar100",
            "seg-sample", "seg-sample-upright")
#: The splits of every dataset.
SPLITS = ("train", "test")

DIGIT_CLASSES = [str(d) for d in range(10)]
#: Fashion-MNIST's labels 0..9, in order (github.com/zalandoresearch/fashion-mnist).
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
#: CIFAR-100's 100 fine labels in label order (alphabetical), as in its ``meta`` file.
CIFAR100_CLASSES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split()
assert len(CIFAR100_CLASSES) == 100


def check_name(name: str) -> str:
    """``name`` if it is a known dataset, else :class:`DataError` listing the known ones."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return name


def check_split(split: str) -> str:
    """``split`` if it is ``"train"`` or ``"test"``, else :class:`DataError`."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    return split
