"""Client helpers for the exported feature extractor under TF Serving.

The SavedModel that :mod:`mtssl_tf.serving.model_export` writes has one
signature, ``serving_default``: input ``images`` (uint8 [N, H, W, 3], any H
and W; the model resizes and normalises inside), outputs ``pooled`` [N, C],
``block3`` [N, h, w, C] and, for a model with the UnitMixer (the paper's
lasso, Doersch & Zisserman, ICCV 2017, Sec. 4), ``mixed_<task>``
[N, h, w, C] per task.

This module builds and parses the two wire formats, and checks images
before they are sent:

* REST (port 8501): the **columnar** ``predict`` format of TF Serving's REST
  API, ``{"signature_name": "serving_default", "inputs": {"images":
  [[[[r, g, b], ...]]]}}``, answered by ``{"outputs": {"pooled": [...],
  "block3": [...], ...}}``. Columnar rather than row ("instances") format:
  the whole batch is one nested list and the answer is one object of named
  arrays, so parsing needs no per-row stacking.
* gRPC (port 8500): ``PredictionService.Predict`` with a ``PredictRequest``
  from ``tensorflow-serving-api`` (imported only when a gRPC helper is
  called).

Checking matters: TF Serving turns every JSON integer into a uint8 without a
range check, so 300 would silently arrive as 44; floats are refused by the
server with a terse type error. :func:`check_images` refuses both, naming
the problem, before anything is sent.

Example:
  >>> from mtssl_tf.serving import client as serving_client
  >>> feats = serving_client.predict_rest(images, model_name="mtssl_demo")
  >>> feats["pooled"].shape
  (2, 1024)
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import numpy as np

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
REST_PORT = 8501
GRPC_PORT = 8500
_GRPC_INSTALL = "pip install tensorflow-serving-api==2.20.0"

Features = Dict[str, np.ndarray]


class ServingError(RuntimeError):
  """The model server answered with an error (its message is kept)."""


# -- input checks -------------------------------------------------------------


def check_images(images: Any, name: str = INPUT_NAME) -> np.ndarray:
  """Returns ``images`` as a uint8 array [N, H, W, 3] or raises ValueError.

  Accepted: uint8 arrays, and integer arrays (or nested lists of ints) whose
  values all lie in [0, 255], which are converted to uint8. Refused, with a
  message that names the problem: float or bool values (no silent rescaling:
  [0, 1] and [0, 255] floats cannot be told apart), integers outside
  [0, 255], a rank other than 4, a channel count other than 3, an empty
  batch or an empty image.

  Args:
    images: array-like [N, H, W, 3].
    name: how the input is called in error messages.

  Raises:
    ValueError: the images cannot be sent as they are.
  """
  try:
    array = np.asarray(images)
  except ValueError as e:  # ragged nested lists
    raise ValueError(f"{name}: not a rectangular array ({e})") from None
  if array.dtype == np.uint8:
    pass
  elif array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
    if np.issubdtype(array.dtype, np.floating):
      hint = ("convert explicitly, e.g. np.clip(np.round(x), 0, 255)"
              ".astype(np.uint8) (multiply floats in [0, 1] by 255 first)")
    else:
      hint = "expected uint8 RGB values 0..255"
    raise ValueError(
        f"{name}: dtype {array.dtype} is not accepted: the serving signature "
        f"takes uint8 images; {hint}")
  elif array.size:
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
      raise ValueError(
          f"{name}: integer values must lie in [0, 255] (uint8), got min "
          f"{low}, max {high}; the server would wrap them modulo 256")
  if array.ndim != 4:
    raise ValueError(
        f"{name}: rank {array.ndim} (shape {array.shape}) is not a batch of "
        "images; expected [N, H, W, 3] (one image [H, W, 3]: add a batch "
        "axis with images[None])")
  if array.shape[-1] != 3:
    raise ValueError(
        f"{name}: {array.shape[-1]} channels (shape {array.shape}); expected "
        "3 (RGB): convert grey or RGBA images to RGB first (load_images "
        "does)")
  if min(array.shape[:3]) < 1:
    raise ValueError(
        f"{name}: empty batch or image (shape {array.shape}); N, H and W "
        "must be >= 1")
  return array.astype(np.uint8, copy=False)


def load_images(paths: Sequence[str]) -> List[np.ndarray]:
  """Reads image files as uint8 RGB arrays [H, W, 3] (Pillow).

  Grey images are repeated to 3 channels and RGBA drops alpha, the package's
  rule for every input (:func:`mtssl_tf.ops.image.ensure_rgb`).
  """
  from PIL import Image  # only the command-line clients read files

  result = []
  for path in paths:
    with Image.open(path) as image:
      result.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
  return result


def batched_predict(predict: Callable[[np.ndarray], Features],
                    images: Sequence[np.ndarray],
                    batch_size: int = 32) -> Features:
  """Runs ``predict`` over images of possibly different sizes.

  One request holds one tensor, so only images of the same size can share a
  request: images are grouped by size, each group is sent in chunks of at
  most ``batch_size``, and the results are put back in input order. Every
  output has the same shape for every image size (the model resizes), so
  the results stack.

  Args:
    predict: uint8 batch [n, H, W, 3] -> dict of arrays with n rows.
    images: uint8 arrays [H, W, 3].
    batch_size: most images per request.

  Returns:
    Output name -> array whose row ``i`` belongs to ``images[i]``.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  if not len(images):
    raise ValueError("images: no images given")
  groups: Dict[Tuple[int, ...], List[int]] = {}
  for i, image in enumerate(images):
    image = np.asarray(image)
    if image.ndim != 3:
      raise ValueError(f"images[{i}]: shape {image.shape} is not one image "
                       "[H, W, 3]")
    groups.setdefault(image.shape, []).append(i)
  result: Features = {}
  for indices in groups.values():
    for start in range(0, len(indices), batch_size):
      chunk = indices[start:start + batch_size]
      outputs = predict(np.stack([images[i] for i in chunk]))
      for key, value in outputs.items():
        if key not in result:
          result[key] = np.zeros((len(images),) + value.shape[1:], value.dtype)
        result[key][chunk] = value
  return result


# -- REST ---------------------------------------------------------------------


def rest_url(model_name: str, host: str = "localhost", port: int = REST_PORT,
             version: Optional[int] = None) -> str:
  """``http://host:port/v1/models/<name>[/versions/<v>]:predict``."""
  version_part = "" if version is None else f"/versions/{int(version)}"
  return (f"http://{host}:{int(port)}/v1/models/{model_name}{version_part}"
          ":predict")


def build_rest_request(images: Any,
                       signature_name: str = SIGNATURE_NAME) -> Dict[str, Any]:
  """The columnar ``predict`` request body (a dict; ``json.dumps`` it)."""
  array = check_images(images)
  return {"signature_name": signature_name,
          "inputs": {INPUT_NAME: array.tolist()}}


def _as_array(value: Any) -> np.ndarray:
  array = np.asarray(value)
  # The signature's outputs are DT_FLOAT; TF Serving prints each float with
  # enough digits to round-trip (and always with a "." or exponent), so
  # float32 recovers the exact values.
  if np.issubdtype(array.dtype, np.floating):
    array = array.astype(np.float32)
  return array


def parse_rest_response(body: Union[str, bytes, Mapping[str, Any]]) -> Features:
  """Parses a ``predict`` response body into named arrays.

  Handles the columnar answer (``{"outputs": {name: nested list}}``) and,
  for completeness, the row answer (``{"predictions": [{name: ...}, ...]}``).
  A single unnamed output is returned under the key ``"output"``.

  Raises:
    ServingError: the body is ``{"error": message}``.
    ValueError: the body is not a ``predict`` response.
  """
  if isinstance(body, (str, bytes)):
    try:
      body = json.loads(body)
    except json.JSONDecodeError as e:
      raise ValueError(f"response is not JSON: {e}") from None
  if not isinstance(body, Mapping):
    raise ValueError(f"response must be a JSON object, got "
                     f"{type(body).__name__}")
  if "error" in body:
    raise ServingError(f"model server error: {body['error']}")
  if "outputs" in body:
    outputs = body["outputs"]
    if isinstance(outputs, Mapping):
      return {k: _as_array(v) for k, v in outputs.items()}
    return {"output": _as_array(outputs)}
  if "predictions" in body:
    rows = body["predictions"]
    if rows and isinstance(rows[0], Mapping):
      return {k: _as_array([row[k] for row in rows]) for k in rows[0]}
    return {"output": _as_array(rows)}
  raise ValueError("response has none of 'outputs', 'predictions', 'error': "
                   f"keys {sorted(body)}")


def predict_rest(images: Any, model_name: str, host: str = "localhost",
                 port: int = REST_PORT, version: Optional[int] = None,
                 signature_name: str = SIGNATURE_NAME,
                 timeout: float = 60.0) -> Features:
  """Sends one batch to TF Serving's REST API and returns the features.

  Raises:
    ValueError: the images cannot be sent (see :func:`check_images`).
    ServingError: the server answered with an error or could not be reached.
  """
  body = json.dumps(build_rest_request(images, signature_name)).encode()
  url = rest_url(model_name, host, port, version)
  request = urllib.request.Request(
      url, data=body, headers={"Content-Type": "application/json"},
      method="POST")
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return parse_rest_response(response.read())
  except urllib.error.HTTPError as e:
    text = e.read().decode(errors="replace")
    try:
      message = json.loads(text).get("error", text)
    except (json.JSONDecodeError, AttributeError):
      message = text
    raise ServingError(f"HTTP {e.code} from {url}: {message}") from None
  except urllib.error.URLError as e:
    raise ServingError(f"cannot reach {url}: {e.reason}") from None


# -- gRPC ---------------------------------------------------------------------


def _serving_apis():
  try:
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc
  except ImportError as e:
    raise ImportError(
        f"the gRPC client needs tensorflow-serving-api ({_GRPC_INSTALL}): "
        f"{e}") from None
  return predict_pb2, prediction_service_pb2_grpc


def build_predict_request(images: Any, model_name: str,
                          signature_name: str = SIGNATURE_NAME,
                          version: Optional[int] = None):
  """A ``tensorflow.serving.PredictRequest`` for one checked batch."""
  import tensorflow as tf

  predict_pb2, _ = _serving_apis()
  array = check_images(images)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = int(version)
  request.inputs[INPUT_NAME].CopyFrom(
      tf.make_tensor_proto(array, dtype=tf.uint8))
  return request


def parse_predict_response(response) -> Features:
  """``PredictResponse`` -> output name -> array."""
  import tensorflow as tf

  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def grpc_channel(target: str):
  """An insecure channel without gRPC's 4 MB message cap: one batch of
  block-3 maps (32 x 14 x 14 x 1024 floats) is about 26 MB."""
  import grpc

  unlimited = -1
  return grpc.insecure_channel(target, options=[
      ("grpc.max_send_message_length", unlimited),
      ("grpc.max_receive_message_length", unlimited)])


def predict_grpc(images: Any, model_name: str,
                 target: str = f"localhost:{GRPC_PORT}",
                 version: Optional[int] = None,
                 signature_name: str = SIGNATURE_NAME,
                 timeout: float = 60.0, channel=None) -> Features:
  """Sends one batch to ``PredictionService.Predict`` and returns features.

  Args:
    images: uint8 [N, H, W, 3] (see :func:`check_images`).
    model_name: TF Serving's model name.
    target: ``host:port`` of the gRPC API.
    version: a model version, or ``None`` for the latest.
    signature_name: the SignatureDef to run.
    timeout: seconds.
    channel: an open channel to reuse (else one is opened and closed).

  Raises:
    ValueError: the images cannot be sent.
    ServingError: the server answered with an error.
  """
  import grpc

  _, service = _serving_apis()
  request = build_predict_request(images, model_name, signature_name, version)
  own = channel is None
  channel = grpc_channel(target) if own else channel
  try:
    stub = service.PredictionServiceStub(channel)
    try:
      response = stub.Predict(request, timeout=timeout)
    except grpc.RpcError as e:
      raise ServingError(
          f"gRPC {e.code().name} from {target}: {e.details()}") from None
  finally:
    if own:
      channel.close()
  return parse_predict_response(response)


# ---------------------------------------------------------------------------
# What the two command-line clients (serving/rest_client.py,
# serving/grpc_client.py) share: their common arguments and their run.


def client_arg_parser(description: str):
  """An ``argparse`` parser with the arguments both clients take."""
  import argparse

  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("images", nargs="*", help="image files (JPEG, PNG, ...)")
  parser.add_argument("--npy", help="a .npy file of uint8 images [N, H, W, 3]")
  parser.add_argument("--model_name", default="mtssl_demo")
  parser.add_argument("--version", type=int, default=None,
                      help="model version (default: the latest)")
  parser.add_argument("--signature_name", default=SIGNATURE_NAME)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--timeout", type=float, default=60.0)
  parser.add_argument("--output", default="features.npz")
  return parser


def parse_client_args(parser, argv=None):
  args = parser.parse_args(argv)
  if bool(args.images) == bool(args.npy):
    parser.error("give image files or --npy (one of the two)")
  return args


def run_client(args, predict, log=print) -> int:
  """Reads the images named by ``args``, sends them through ``predict`` in
  batches, writes the features to ``args.output``; returns the exit code."""
  import sys

  try:
    if args.npy:
      images = list(check_images(np.load(args.npy)))
    else:
      images = load_images(args.images)
    features = batched_predict(predict, images, args.batch_size)
  except (OSError, ValueError, ServingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  np.savez(args.output, **features)
  for name, value in sorted(features.items()):
    log(f"{name}: {value.shape} {value.dtype}")
  log(f"wrote {args.output}")
  return 0
