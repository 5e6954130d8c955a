"""The real datasets: one module per dataset (or family), reading its official layout or
TFDS, each declaring and registering its `DatasetSpec` (wsdhash/data/dataset_spec.py).

Importing this package imports every dataset module, in registration order (the order
of `python -m wsdhash.data.prepare`'s table), so the registries are complete.
"""

# isort: off
from wsdhash.data.sources import flickr25k  # noqa: F401
from wsdhash.data.sources import nuswide  # noqa: F401
from wsdhash.data.sources import hashnet_lists  # noqa: F401  imagenet100, coco
from wsdhash.data.sources import voc  # noqa: F401  voc2007, voc2012
from wsdhash.data.sources import cifar10  # noqa: F401
from wsdhash.data.sources import cub200  # noqa: F401
from wsdhash.data.sources import stanford_dogs  # noqa: F401
from wsdhash.data.sources import image_folder  # noqa: F401
# isort: on
