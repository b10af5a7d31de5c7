# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""A small, deterministic COCO-format detection set, made on the fly.

Tests and the demo need detection data and nothing may be downloaded, so
this module draws it: filled squares, circles and triangles of random colour
and size on a smooth noisy background. The result has COCO 2017's layout, so
the stock mmdet ``CocoDataset`` and ``CocoMetric`` (pycocotools) read it::

    <root>/annotations/instances_train2017.json
    <root>/annotations/instances_val2017.json
    <root>/train2017/000000000001.png ...
    <root>/val2017/...

The same arguments always give the same bytes (numpy ``RandomState`` seeded
per split; PNG is lossless). A finished set carries ``toy_coco.json`` with
the arguments it was made with; asking again for the same set is a no-op.
The set is built in a temporary folder beside ``root`` and moved into place
at the end, so an interrupted run never leaves a half-written data root.
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from mmdet_psbn.utils.io import atomic_dir

__all__ = [
    'TOY_CLASSES', 'build_coco_root', 'build_data_root', 'draw_background',
    'make_toy_coco', 'write_coco_split'
]

TOY_CLASSES: Tuple[str, ...] = ('square', 'circle', 'triangle')
MANIFEST = 'toy_coco.json'
# Bump when the drawing changes, so old sets on disk are rebuilt.
FORMAT_VERSION = 1


def _apart(a: tuple, b: tuple, frac: float = 0.3) -> bool:
    """Whether box ``a`` (x0, y0, x1, y1) overlaps box ``b`` by at most
    ``frac`` of its width or of its height."""
    return (min(a[2], b[2]) - max(a[0], b[0]) <= frac * (a[2] - a[0])
            or min(a[3], b[3]) - max(a[1], b[1]) <= frac * (a[3] - a[1]))


def draw_background(rng: np.random.RandomState, size: int) -> np.ndarray:
    """A smooth colour gradient plus mild noise, uint8 HxWx3."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    corners = rng.uniform(40, 215, size=(4, 3)).astype(np.float32)
    img = (
        corners[0] * ((1 - x) * (1 - y))[..., None] + corners[1] *
        (x * (1 - y))[..., None] + corners[2] * ((1 - x) * y)[..., None] +
        corners[3] * (x * y)[..., None])
    img += rng.normal(0, 8, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(rng: np.random.RandomState, label: int, cx: float, cy: float,
             r: float) -> np.ndarray:
    """Vertices (N, 2) of the object's outline: exact for squares and
    triangles, a 32-gon for circles."""
    if label == 0:  # square, axis aligned
        return np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r],
                         [cx - r, cy + r]])
    if label == 1:  # circle
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    # triangle, randomly rotated
    t = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _draw_image(rng: np.random.RandomState, size: int, max_objects: int,
                min_size: int, max_size: int):
    img = draw_background(rng, size)
    anns = []
    boxes = []
    for _ in range(rng.randint(1, max_objects + 1)):
        label = int(rng.randint(len(TOY_CLASSES)))
        r = rng.uniform(min_size, max_size) / 2
        # Up to 20 tries to place it without heavy overlap; skip otherwise.
        for _ in range(20):
            cx, cy = rng.uniform(r, size - r, size=2)
            poly = _polygon(rng, label, cx, cy, r)
            x0, y0 = np.clip(poly.min(0), 0, size)
            x1, y1 = np.clip(poly.max(0), 0, size)
            if all(_apart((x0, y0, x1, y1), box) for box in boxes):
                break
        else:
            continue
        boxes.append((x0, y0, x1, y1))
        colour = tuple(int(c) for c in rng.randint(0, 256, size=3))
        cv2.fillPoly(
            img, [np.round(poly).astype(np.int32)],
            colour,
            lineType=cv2.LINE_AA)
        # Shoelace formula: the polygon's area, as COCO's ``area`` field.
        px, py = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(
            np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1)))
        anns.append(
            dict(
                category_id=label + 1,
                bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                area=round(float(area), 2),
                segmentation=[[round(float(v), 2) for v in poly.ravel()]],
                iscrowd=0))
    return img, anns


def write_coco_split(root: str, split: str, num_images: int, image_size: int,
                     draw: Callable[[],
                                    Tuple[np.ndarray,
                                          List[dict]]], classes: Sequence[str],
                     supercategory: str, description: str) -> None:
    """Write one split of a generated COCO-format set.

    ``<root>/<split>2017/000000000001.png ...`` (``num_images`` square
    images of side ``image_size``, each from one call of ``draw``, which
    returns the image and its annotations without ids) and
    ``<root>/annotations/instances_<split>2017.json``; category ``i + 1``
    is ``classes[i]``.

    Raises:
        OSError: an image could not be written.
    """
    img_dir = osp.join(root, f'{split}2017')
    os.makedirs(img_dir)
    images, annotations = [], []
    for i in range(1, num_images + 1):
        img, anns = draw()
        file_name = f'{i:012d}.png'
        if not cv2.imwrite(osp.join(img_dir, file_name), img):
            raise OSError(f'could not write {osp.join(img_dir, file_name)}')
        images.append(
            dict(
                id=i, file_name=file_name, width=image_size,
                height=image_size))
        for ann in anns:
            ann.update(id=len(annotations) + 1, image_id=i)
            annotations.append(ann)
    categories = [
        dict(id=i + 1, name=name, supercategory=supercategory)
        for i, name in enumerate(classes)
    ]
    with open(
            osp.join(root, 'annotations', f'instances_{split}2017.json'),
            'w') as f:
        json.dump(
            dict(
                info=dict(description=description),
                images=images,
                annotations=annotations,
                categories=categories), f)


def build_data_root(root: str,
                    manifest: str,
                    args: Dict,
                    write: Callable[[str], None],
                    kind: str,
                    force: bool = False) -> Dict:
    """Make a generated data root atomically, or keep the same one.

    The one way the data tools of this package write a data root:

    - ``<root>/<manifest>`` holds ``args`` (JSON). If it is there with the
      same ``args`` (and not ``force``), nothing is done;
    - a ``root`` that exists without the manifest is not ours: refused,
      never overwritten;
    - otherwise ``write(tmp)`` fills a temporary folder beside ``root``,
      the manifest is added, and the folder replaces ``root`` with one
      ``os.replace`` (:func:`mmdet_psbn.utils.io.atomic_dir`); on any
      error (``KeyboardInterrupt`` too) the temporary folder is removed,
      so no half-written data root is ever left.

    Args:
        root (str): The data root.
        manifest (str): File name of the manifest inside ``root``.
        args (dict): What the set is made from (JSON-serialisable).
        write (callable): ``write(folder)`` writes the set into ``folder``.
        kind (str): What the set is, for the error message, e.g.
            ``'toy COCO set'``.
        force (bool): Rebuild even if the same set exists.

    Returns:
        dict: ``args``.

    Raises:
        FileExistsError: ``root`` exists and has no ``manifest``.
    """
    root = osp.abspath(root)
    manifest_path = osp.join(root, manifest)
    if not force and osp.isfile(manifest_path):
        with open(manifest_path) as f:
            if json.load(f) == args:
                return args
    if osp.exists(root) and not osp.isfile(manifest_path):
        raise FileExistsError(
            f'{root} exists and is not a {kind} made by this tool; '
            'choose another folder or remove it')
    with atomic_dir(root) as tmp:
        write(tmp)
        with open(osp.join(tmp, manifest), 'w') as f:
            json.dump(args, f, indent=1)
    return args


def build_coco_root(root: str,
                    manifest: str,
                    args: Dict,
                    draw_split: Callable[[str, str, int, int], None],
                    kind: str,
                    force: bool = False) -> Dict:
    """:func:`build_data_root` for a COCO-format set of a ``train`` and a
    ``val`` split: ``draw_split(folder, split, num_images, seed)`` writes each
    (``args['num_train']`` images seeded ``args['seed']``, ``args['num_val']``
    seeded ``args['seed'] + 1``)."""

    def write(tmp):
        os.makedirs(osp.join(tmp, 'annotations'))
        draw_split(tmp, 'train', args['num_train'], args['seed'])
        draw_split(tmp, 'val', args['num_val'], args['seed'] + 1)

    return build_data_root(root, manifest, args, write, kind, force)


def make_toy_coco(root: str,
                  num_train: int = 64,
                  num_val: int = 16,
                  image_size: int = 128,
                  max_objects: int = 3,
                  min_size: int = 20,
                  max_size: int = 56,
                  seed: int = 0,
                  force: bool = False) -> Dict:
    """Write the toy set under ``root`` (see the module docstring).

    Args:
        root (str): The data root to create.
        num_train (int): Images in ``train2017``. Defaults to 64.
        num_val (int): Images in ``val2017``. Defaults to 16.
        image_size (int): Side of the square images. Defaults to 128.
        max_objects (int): At most this many objects per image (at least
            one). Defaults to 3.
        min_size (int): Smallest object size in pixels. Defaults to 20.
        max_size (int): Largest object size in pixels. Defaults to 56.
        seed (int): Seed of the training split; validation uses
            ``seed + 1``. Defaults to 0.
        force (bool): Rebuild even if the same set already exists.

    Returns:
        dict: The manifest written to ``root/toy_coco.json``.
    """
    args = dict(
        format_version=FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        max_objects=max_objects,
        min_size=min_size,
        max_size=max_size,
        seed=seed)
    if num_train < 1 or num_val < 1:
        raise ValueError('num_train and num_val must be >= 1, got '
                         f'{num_train} and {num_val}')
    if not 0 < min_size <= max_size < image_size:
        raise ValueError('need 0 < min_size <= max_size < image_size, got '
                         f'{min_size}, {max_size}, {image_size}')

    def draw_split(folder, split, num_images, split_seed):
        rng = np.random.RandomState(split_seed)
        write_coco_split(
            folder, split, num_images, image_size, lambda: _draw_image(
                rng, image_size, max_objects, min_size, max_size), TOY_CLASSES,
            'shape', 'mmdet-psbn toy COCO')

    return build_coco_root(root, MANIFEST, args, draw_split, 'toy COCO set',
                           force)
