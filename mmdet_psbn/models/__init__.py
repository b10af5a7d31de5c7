# Copyright (c) mmdet-psbn contributors. All rights reserved.
from . import layers  # noqa: F401
from . import backbones, classifiers  # noqa: F401  CIFAR models
