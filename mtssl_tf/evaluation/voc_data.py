"""PASCAL VOC detection data: annotation XML, TFDS ``voc/2007`` and a VOC
folder on disk.

Doersch & Zisserman (ICCV 2017) fine-tune Faster R-CNN on VOC 2007 trainval
and report mAP on VOC 2007 test. Every source here yields the same example
format (one ``tf.data`` element per image):

* ``image``: uint8 [H, W, 3];
* ``boxes``: float32 [N, 4], ``[ymin, xmin, ymax, xmax]`` in **VOC pixel
  coordinates** (1-based, inclusive: the numbers of the annotation XML);
* ``classes``: int32 [N], 0-based index into :data:`VOC_CLASSES`;
* ``difficult``: bool [N].

Sources:

* :func:`voc_folder_dataset`: a folder with ``JPEGImages/`` and
  ``Annotations/`` (the VOCdevkit layout; ``ImageSets/Main/<split>.txt`` is
  used when present, otherwise every annotation file).
* :func:`tfds_voc_dataset`: the TFDS ``voc/2007`` builder, prepared
  beforehand (``download=False``: nothing is downloaded at run time). TFDS
  stores ``xmin / width`` etc. from the XML without the devkit's -1, so
  multiplying back by the image size gives the XML numbers again.
* :func:`mtssl_tf.data.assets.labelme_voc_dir`: three real PASCAL VOC 2012
  images with VOC XML boxes from the ``labelme`` source archive, fetched by
  the set-up step (never at run time); a VOC folder for
  :func:`voc_folder_dataset`.
"""
from __future__ import annotations

import os
import pathlib
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor")

# Spellings seen in VOC-style exports (labelme writes "potted plant" and
# "tv/monitor") mapped to the devkit's names.
_CLASS_ALIASES = {"potted plant": "pottedplant", "tv/monitor": "tvmonitor",
                  "tv monitor": "tvmonitor", "dining table": "diningtable",
                  "motor bike": "motorbike", "aero plane": "aeroplane"}


ELEMENT_SPEC = {
    "image": tf.TensorSpec([None, None, 3], tf.uint8),
    "boxes": tf.TensorSpec([None, 4], tf.float32),
    "classes": tf.TensorSpec([None], tf.int32),
    "difficult": tf.TensorSpec([None], tf.bool),
}


def class_index(name: str, class_names: Sequence[str] = VOC_CLASSES) -> int:
  """0-based class index of ``name`` (aliases allowed); ``ValueError`` lists
  the known names otherwise."""
  key = name.strip().lower()
  key = _CLASS_ALIASES.get(key, key)
  if key not in class_names:
    raise ValueError(f"unknown object class {name!r}; known classes: "
                     f"{', '.join(class_names)}")
  return list(class_names).index(key)


def _flag(node, tag: str) -> bool:
  # Empty elements (<difficult/>, as labelme writes) mean "not set".
  child = node.find(tag)
  text = (child.text or "").strip() if child is not None else ""
  return text not in ("", "0", "false", "False")


def parse_voc_xml(source: Union[str, bytes, os.PathLike]) -> Dict:
  """Parses one VOC annotation.

  Args:
    source: a path to the XML file, or the XML text itself (str or bytes
      starting with ``<``).

  Returns:
    ``{"filename": str, "height": int, "width": int, "depth": int,
    "objects": [{"name", "bbox": (xmin, ymin, xmax, ymax) floats in VOC
    pixel coordinates, "difficult": bool, "truncated": bool}]}``.

  Raises:
    ValueError: malformed XML or a missing ``size``/``bndbox`` field, naming
      the file and the field.
  """
  if isinstance(source, bytes):
    source = source.decode("utf-8")
  if isinstance(source, str) and source.lstrip().startswith("<"):
    text, where = source, "<xml string>"
  else:
    where = os.fspath(source)
    if not os.path.isfile(where):
      raise FileNotFoundError(f"annotation file {where} does not exist")
    with open(where, "r", encoding="utf-8") as f:
      text = f.read()
  try:
    root = ElementTree.fromstring(text)
  except ElementTree.ParseError as e:
    raise ValueError(f"{where}: not valid XML ({e})") from None

  def number(node, tag, what):
    child = node.find(tag)
    if child is None or not (child.text or "").strip():
      raise ValueError(f"{where}: {what} has no <{tag}>")
    try:
      return float(child.text)
    except ValueError:
      raise ValueError(f"{where}: {what} <{tag}> is not a number: "
                       f"{child.text!r}") from None

  size = root.find("size")
  if size is None:
    raise ValueError(f"{where}: the annotation has no <size>")
  depth = size.find("depth")
  out = {
      "filename": (root.findtext("filename") or "").strip(),
      "height": int(number(size, "height", "<size>")),
      "width": int(number(size, "width", "<size>")),
      "depth": int(depth.text) if depth is not None and depth.text else 3,
      "objects": [],
  }
  for k, obj in enumerate(root.findall("object")):
    name = (obj.findtext("name") or "").strip()
    if not name:
      raise ValueError(f"{where}: object {k} has no <name>")
    bndbox = obj.find("bndbox")
    if bndbox is None:
      raise ValueError(f"{where}: object {k} ({name}) has no <bndbox>")
    what = f"object {k} ({name}) <bndbox>"
    bbox = tuple(number(bndbox, t, what)
                 for t in ("xmin", "ymin", "xmax", "ymax"))
    out["objects"].append({"name": name, "bbox": bbox,
                           "difficult": _flag(obj, "difficult"),
                           "truncated": _flag(obj, "truncated")})
  return out


def annotation_to_targets(annotation: Dict,
                          class_names: Sequence[str] = VOC_CLASSES
                          ) -> Dict[str, np.ndarray]:
  """``boxes`` [N, 4] (ymin, xmin, ymax, xmax), ``classes`` [N],
  ``difficult`` [N] of a parsed annotation."""
  objects = annotation["objects"]
  boxes = np.array([[o["bbox"][1], o["bbox"][0], o["bbox"][3], o["bbox"][2]]
                    for o in objects], np.float32).reshape(-1, 4)
  classes = np.array([class_index(o["name"], class_names) for o in objects],
                     np.int32)
  difficult = np.array([o["difficult"] for o in objects], bool)
  return {"boxes": boxes, "classes": classes, "difficult": difficult}


def _voc_ids(folder: pathlib.Path, split: Optional[str]) -> List[str]:
  annotations = folder / "Annotations"
  list_file = folder / "ImageSets" / "Main" / f"{split}.txt"
  if split and list_file.is_file():
    ids = [line.split()[0] for line in list_file.read_text().splitlines()
           if line.strip()]
  else:
    ids = sorted(p.stem for p in annotations.glob("*.xml"))
  return ids


def voc_folder_dataset(voc_folder: Union[str, os.PathLike],
                       split: Optional[str] = None,
                       class_names: Sequence[str] = VOC_CLASSES
                       ) -> tf.data.Dataset:
  """Examples of a VOC folder (``JPEGImages/`` + ``Annotations/``).

  Args:
    voc_folder: the folder (``--voc_folder``), e.g. ``VOCdevkit/VOC2007``.
    split: read the ids from ``ImageSets/Main/<split>.txt`` when that file
      exists; otherwise (or when None) every ``Annotations/*.xml``.
    class_names: the object classes (VOC's 20 by default).

  Raises:
    FileNotFoundError: the folder, one of its sub-folders or an image is
      missing (the message names it).
    ValueError: the folder holds no annotation (empty set).
  """
  if voc_folder is None or not str(voc_folder):
    raise FileNotFoundError("no VOC folder given: pass --voc_folder=DIR "
                            "with JPEGImages/ and Annotations/")
  folder = pathlib.Path(voc_folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"VOC folder {folder} does not exist (expected "
                            "a folder with JPEGImages/ and Annotations/)")
  for sub in ("JPEGImages", "Annotations"):
    if not (folder / sub).is_dir():
      raise FileNotFoundError(f"VOC folder {folder} has no {sub}/ "
                              "sub-folder")
  ids = _voc_ids(folder, split)
  if not ids:
    raise ValueError(f"VOC folder {folder} is empty: no annotation in "
                     f"Annotations/ (split {split!r})")
  records = []
  for image_id in ids:
    annotation = parse_voc_xml(folder / "Annotations" / f"{image_id}.xml")
    name = annotation["filename"] or f"{image_id}.jpg"
    path = folder / "JPEGImages" / name
    if not path.is_file():
      raise FileNotFoundError(f"image {path} of annotation {image_id}.xml "
                              "does not exist")
    records.append((str(path), annotation_to_targets(annotation,
                                                      class_names)))

  def gen():
    for path, targets in records:
      image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                 expand_animations=False)
      yield dict(targets, image=image.numpy())

  return tf.data.Dataset.from_generator(gen, output_signature=ELEMENT_SPEC)


def from_tfds_example(example: Dict) -> Dict[str, tf.Tensor]:
  """Maps a TFDS ``voc`` example to the package format (usable in
  ``Dataset.map``): normalized TFDS boxes -> VOC pixel coordinates."""
  image = example["image"]
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.concat([shape, shape], axis=0)
  objects = example["objects"]
  return {
      "image": tf.cast(image, tf.uint8),
      "boxes": tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4])
               * scale,
      "classes": tf.cast(objects["label"], tf.int32),
      "difficult": tf.cast(objects["is_difficult"], tf.bool),
  }


def tfds_voc_dataset(split: str, data_dir: Optional[str] = None,
                     name: str = "voc/2007") -> tf.data.Dataset:
  """A prepared TFDS VOC split in the package format.

  Args:
    split: e.g. ``"trainval"`` / ``"test"`` (TFDS split syntax allowed).
    data_dir: the TFDS data folder (``None``: TFDS's default).
    name: the TFDS builder and config.

  Raises:
    FileNotFoundError: the dataset is not prepared in ``data_dir``; the
      package never downloads it.
  """
  import tensorflow_datasets as tfds  # heavy: only when TFDS is used
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir, download=False,
                   shuffle_files=False)
  except Exception as e:  # TFDS raises AssertionError or its own errors
    raise FileNotFoundError(
        f"TFDS dataset {name!r} split {split!r} is not prepared in "
        f"data_dir={data_dir!r} ({type(e).__name__}: {e}). Prepare it first "
        f"(`tfds build {name} --data_dir=...`) or pass --voc_folder; "
        "nothing is downloaded at run time.") from None
  return ds.map(from_tfds_example, num_parallel_calls=tf.data.AUTOTUNE)
