"""Serving (model-zoo issue, item 4): the REST and gRPC clients against the
exported SavedModel.

The TF Serving binary cannot be installed here, so two small local servers
stand in for it, both running the SavedModel through ``tf.saved_model.load``:

* a REST server (``http.server`` on 127.0.0.1) whose request parsing follows
  TF Serving's ``json_tensor.cc`` for the ``predict`` API: columnar
  (``inputs``) or row (``instances``) requests, a value's dtype taken from
  the signature, JSON integers for uint8 without a range check, floats
  refused, ragged lists refused, errors answered as ``{"error": ...}``;
* a gRPC server (``grpcio``) implementing ``PredictionService.Predict`` with
  the ``tensorflow-serving-api`` protos.

The clients' answers must equal a direct call of the signature.
"""
import http.server
import importlib.util
import json
import os
import re
import threading
from concurrent import futures

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.serving import client as serving_client
from mtssl_tf.serving import model_export
from mtssl_tf.models.multitask import MultiTaskModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_NAME = "mtssl_demo"
TASKS = {
    "colorization": {"crop_size": 32, "hidden_channels": 8},
    "relative_position": {"patch_size": 16, "gap": 4, "jitter": 2,
                          "rescale_pixels": None, "embedding_units": 16,
                          "hidden_units": [16]},
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
  keras.utils.set_random_seed(0)
  model = MultiTaskModel(trunk={"depth": 26, "width": 0.25}, tasks=TASKS,
                         mixer={"l1": 1e-3, "init": "uniform"})
  export_dir = str(tmp_path_factory.mktemp("export"))
  paths = model_export.export_model(model, export_dir,
                                    MODEL_NAME, version=1, image_size=32)
  return tf.saved_model.load(paths["saved_model"])


def _direct(loaded, images):
  out = loaded.signatures["serving_default"](images=tf.constant(images))
  return {k: v.numpy() for k, v in out.items()}


def _images(seed, n=2, h=40, w=36):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)


# -- a stand-in for TF Serving's REST API ------------------------------------


class _RequestError(ValueError):
  pass


def _json_to_array(value, dtype):
  """A nested JSON list -> array, as TF Serving's FillTensorProto does: the
  shape comes from the first element at each level, every list must match
  it, values must be JSON ints for integer dtypes."""
  shape = []
  probe = value
  while isinstance(probe, list):
    shape.append(len(probe))
    probe = probe[0] if probe else None
  flat = []

  def walk(v, level):
    if not isinstance(v, list):
      if level != len(shape):
        raise _RequestError(f"JSON Value: {v} found at incorrect level: "
                            f"{level + 1} in the JSON DOM. Expected at level: "
                            f"{len(shape)}")
      if dtype.is_integer and (isinstance(v, bool) or not isinstance(v, int)):
        raise _RequestError(f"JSON Value: {json.dumps(v)} is not of expected "
                            f"type: {dtype.name}")
      flat.append(v)
      return
    if level >= len(shape) or len(v) != shape[level]:
      raise _RequestError(f"Encountered list at unexpected size: {len(v)} at "
                          f"level: {level}")
    for item in v:
      walk(item, level + 1)

  walk(value, 0)
  # Tensor int_val -> uint8 is a plain C++ cast: out-of-range ints wrap.
  return np.array(flat, np.int64).astype(dtype.as_numpy_dtype).reshape(shape)


def fake_tf_serving_predict(loaded, body):
  """One ``:predict`` call: request body -> (HTTP status, response body)."""
  try:
    try:
      request = json.loads(body)
    except json.JSONDecodeError as e:
      raise _RequestError(f"JSON Parse error: {e}") from None
    if not isinstance(request, dict):
      raise _RequestError("Is not object")
    name = request.get("signature_name", "serving_default")
    if name not in loaded.signatures:
      raise _RequestError(f"Serving signature name: \"{name}\" not found in "
                          "signature def")
    fn = loaded.signatures[name]
    specs = fn.structured_input_signature[1]
    if ("inputs" in request) == ("instances" in request):
      raise _RequestError("Missing 'inputs' or 'instances' key"
                          if "inputs" not in request else
                          "expecting only one of 'inputs' or 'instances'")
    if "inputs" in request:
      columns = request["inputs"]
      if not isinstance(columns, dict):
        columns = {next(iter(specs)): columns}
      row_format = False
    else:
      rows = request["instances"]
      if not rows:
        raise _RequestError("No values in 'instances' array")
      if isinstance(rows[0], dict):
        columns = {k: [row[k] for row in rows] for k in specs}
      else:
        columns = {next(iter(specs)): rows}
      row_format = True
    inputs = {}
    for key, spec in specs.items():
      if key not in columns:
        raise _RequestError(f"Missing named input: {key} in 'inputs' object.")
      inputs[key] = tf.constant(_json_to_array(columns[key], spec.dtype))
    outputs = {k: v.numpy() for k, v in fn(**inputs).items()}
  except _RequestError as e:
    return 400, json.dumps({"error": str(e)})
  except tf.errors.InvalidArgumentError as e:
    return 400, json.dumps({"error": e.message})
  if row_format:
    n = len(next(iter(outputs.values())))
    return 200, json.dumps({"predictions": [
        {k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]})
  return 200, json.dumps({"outputs": {k: v.tolist()
                                      for k, v in outputs.items()}})


@pytest.fixture(scope="module")
def rest_server(loaded):
  """TF Serving's REST routes on a free local port."""
  route = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_POST(self):  # noqa: N802 (http.server's name)
      body = self.rfile.read(int(self.headers["Content-Length"]))
      match = route.match(self.path)
      if not match or match.group(1) != MODEL_NAME or match.group(2) not in (
          None, "1"):
        status, text = 404, json.dumps(
            {"error": f"Servable not found for request: {self.path}"})
      else:
        status, text = fake_tf_serving_predict(loaded, body)
      data = text.encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server.server_address[1]
  server.shutdown()
  server.server_close()


# -- client-side checks ------------------------------------------------------


def test_check_images_accepts_uint8_and_in_range_ints():
  images = _images(0, 2, 5, 4)
  np.testing.assert_array_equal(serving_client.check_images(images), images)
  as_lists = serving_client.check_images(images.astype(np.int64).tolist())
  assert as_lists.dtype == np.uint8
  np.testing.assert_array_equal(as_lists, images)


@pytest.mark.parametrize("images, message", [
    (np.zeros((1, 8, 8, 3), np.float32), "dtype float32"),
    (np.full((1, 8, 8, 3), 0.5), "dtype float64"),
    (np.zeros((1, 8, 8, 3), bool), "dtype bool"),
    (np.full((1, 8, 8, 3), 300, np.int32), r"\[0, 255\].*max 300"),
    (np.full((1, 8, 8, 3), -1, np.int64), r"\[0, 255\].*min -1"),
    (np.zeros((8, 8, 3), np.uint8), "rank 3"),
    (np.zeros((1, 1, 8, 8, 3), np.uint8), "rank 5"),
    (np.zeros((1, 8, 8, 4), np.uint8), "4 channels"),
    (np.zeros((1, 8, 8, 1), np.uint8), "1 channels"),
    (np.zeros((0, 8, 8, 3), np.uint8), "empty"),
    (np.zeros((1, 0, 8, 3), np.uint8), "empty"),
    ([[[[1, 2, 3]]], [[[1, 2]]]], "rectangular"),
])
def test_client_refuses_bad_images(images, message):
  with pytest.raises(ValueError, match=message):
    serving_client.check_images(images)
  with pytest.raises(ValueError, match=message):
    serving_client.build_rest_request(images)
  with pytest.raises(ValueError, match=message):
    serving_client.build_predict_request(images, MODEL_NAME)


def test_server_side_wraps_what_the_client_refuses(loaded):
  # Why the client checks: TF Serving casts JSON ints to uint8 unchecked.
  images = _images(1, 1, 32, 32).astype(np.int64)
  wrapped = images.copy()
  images[0, :4, :4] += 256
  body = json.dumps({"inputs": {"images": images.tolist()}})
  status, text = fake_tf_serving_predict(loaded, body)
  assert status == 200
  got = serving_client.parse_rest_response(text)
  np.testing.assert_array_equal(got["pooled"],
                                _direct(loaded, wrapped.astype(np.uint8))
                                ["pooled"])
  # Floats are refused by the server with a terse type error.
  status, text = fake_tf_serving_predict(
      loaded, json.dumps({"inputs": {"images": [[[[0.5, 1.0, 2.0]]]]}}))
  assert status == 400 and "is not of expected type: uint8" in text


# -- REST --------------------------------------------------------------------


def test_rest_request_format():
  images = _images(2, 2, 3, 4)
  request = serving_client.build_rest_request(images)
  assert list(request) == ["signature_name", "inputs"]
  assert request["signature_name"] == "serving_default"
  assert list(request["inputs"]) == ["images"]
  np.testing.assert_array_equal(np.array(request["inputs"]["images"]), images)
  text = json.dumps(request)
  assert json.loads(text) == request
  assert serving_client.rest_url(MODEL_NAME) == (
      "http://localhost:8501/v1/models/mtssl_demo:predict")
  assert serving_client.rest_url(MODEL_NAME, "h", 9, version=4) == (
      "http://h:9/v1/models/mtssl_demo/versions/4:predict")


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 45, 29)])
def test_rest_round_trip_equals_direct_call(loaded, shape):
  images = _images(3, *shape)
  body = json.dumps(serving_client.build_rest_request(images))
  status, text = fake_tf_serving_predict(loaded, body)
  assert status == 200, text
  assert list(json.loads(text)) == ["outputs"]
  got = serving_client.parse_rest_response(text)
  want = _direct(loaded, images)
  assert set(got) == set(want) == {"pooled", "block3", "mixed_colorization",
                                   "mixed_relative_position"}
  for name, value in want.items():
    assert got[name].dtype == np.float32
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_parse_row_format_and_errors(loaded):
  images = _images(4, 2, 32, 32)
  status, text = fake_tf_serving_predict(
      loaded, json.dumps({"instances": images.tolist()}))
  assert status == 200 and list(json.loads(text)) == ["predictions"]
  got = serving_client.parse_rest_response(text)
  for name, value in _direct(loaded, images).items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  with pytest.raises(serving_client.ServingError, match="boom"):
    serving_client.parse_rest_response('{"error": "boom"}')
  with pytest.raises(ValueError, match="none of"):
    serving_client.parse_rest_response('{"result": 1}')
  with pytest.raises(ValueError, match="not JSON"):
    serving_client.parse_rest_response("<html>")


def test_predict_rest_over_http(loaded, rest_server):
  images = _images(5, 2, 50, 40)
  got = serving_client.predict_rest(images, MODEL_NAME, host="127.0.0.1",
                                    port=rest_server, version=1)
  for name, value in _direct(loaded, images).items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  with pytest.raises(serving_client.ServingError,
                     match="HTTP 404.*Servable not found"):
    serving_client.predict_rest(images, "other", host="127.0.0.1",
                                port=rest_server)
  with pytest.raises(serving_client.ServingError, match="not found"):
    serving_client.predict_rest(images, MODEL_NAME, host="127.0.0.1",
                                port=rest_server, signature_name="nope")


def test_batched_predict_groups_sizes_and_keeps_order(loaded):
  sizes = [(32, 32), (40, 24), (32, 32), (40, 24), (32, 32)]
  images = [_images(10 + i, 1, h, w)[0] for i, (h, w) in enumerate(sizes)]
  calls = []

  def predict(batch):
    calls.append(batch.shape)
    return _direct(loaded, batch)

  got = serving_client.batched_predict(predict, images, batch_size=2)
  assert sorted(calls) == sorted([(2, 32, 32, 3), (1, 32, 32, 3),
                                  (2, 40, 24, 3)])
  for i, image in enumerate(images):
    want = _direct(loaded, image[None])
    for name, value in want.items():
      # A batch of another size runs other kernel blockings: the rounding
      # errors scale with the output's magnitude (up to ~40 here).
      np.testing.assert_allclose(got[name][i], value[0], rtol=1e-5,
                                 atol=1e-5 * np.abs(value).max(),
                                 err_msg=f"{name}[{i}]")


def _load_script(name):
  path = os.path.join(REPO, "serving", name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_rest_client_script(loaded, rest_server, tmp_path, capsys):
  images = _images(6, 3, 36, 36)
  np.save(tmp_path / "images.npy", images)
  script = _load_script("rest_client.py")
  rc = script.main([f"--npy={tmp_path / 'images.npy'}", "--host=127.0.0.1",
                    f"--port={rest_server}", f"--model_name={MODEL_NAME}",
                    f"--output={tmp_path / 'f.npz'}", "--batch_size=2"])
  assert rc == 0
  got = np.load(tmp_path / "f.npz")
  for name, value in _direct(loaded, images).items():
    np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5,
                               err_msg=name)
  assert "pooled: (3, 256) float32" in capsys.readouterr().out
  # A float array is refused with the client's message, nothing is sent.
  np.save(tmp_path / "float.npy", images.astype(np.float32))
  assert script.main([f"--npy={tmp_path / 'float.npy'}", "--port=1"]) == 1
  assert "error: images: dtype float32" in capsys.readouterr().err


def test_load_images_converts_to_rgb(tmp_path):
  from PIL import Image
  rgb = _images(7, 1, 9, 7)[0]
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
  Image.fromarray(np.dstack([rgb, np.full((9, 7), 10, np.uint8)]),
                  "RGBA").save(tmp_path / "rgba.png")
  got = serving_client.load_images([str(tmp_path / n) for n in
                                    ("rgb.png", "grey.png", "rgba.png")])
  np.testing.assert_array_equal(got[0], rgb)
  np.testing.assert_array_equal(got[1], np.repeat(rgb[..., :1], 3, axis=-1))
  np.testing.assert_array_equal(got[2], rgb)


def test_models_config_parses():
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2

  with open(os.path.join(REPO, "serving", "models.config")) as f:
    config = text_format.Parse(f.read(),
                               model_server_config_pb2.ModelServerConfig())
  (model,) = config.model_config_list.config
  assert model.name == MODEL_NAME
  assert model.base_path == f"/models/{MODEL_NAME}"
  assert model.model_platform == "tensorflow"
  assert model.model_version_policy.latest.num_versions == 1


# -- gRPC --------------------------------------------------------------------


def test_predict_request_proto():
  images = _images(8, 2, 5, 6)
  request = serving_client.build_predict_request(images, MODEL_NAME,
                                                 version=7)
  assert request.model_spec.name == MODEL_NAME
  assert request.model_spec.signature_name == "serving_default"
  assert request.model_spec.version.value == 7
  assert list(request.inputs) == ["images"]
  tensor = request.inputs["images"]
  assert tensor.dtype == tf.uint8.as_datatype_enum
  assert [d.size for d in tensor.tensor_shape.dim] == [2, 5, 6, 3]
  np.testing.assert_array_equal(
      np.frombuffer(tensor.tensor_content, np.uint8).reshape(2, 5, 6, 3),
      images)
  unversioned = serving_client.build_predict_request(images, MODEL_NAME)
  assert not unversioned.model_spec.HasField("version")


def test_parse_predict_response_proto():
  from tensorflow_serving.apis import predict_pb2

  pooled = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
  block3 = -np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)
  response = predict_pb2.PredictResponse()
  response.outputs["pooled"].dtype = tf.float32.as_datatype_enum
  for d in pooled.shape:
    response.outputs["pooled"].tensor_shape.dim.add().size = d
  response.outputs["pooled"].float_val.extend(pooled.ravel().tolist())
  response.outputs["block3"].CopyFrom(tf.make_tensor_proto(block3))
  got = serving_client.parse_predict_response(response)
  assert set(got) == {"pooled", "block3"}
  np.testing.assert_array_equal(got["pooled"], pooled)
  np.testing.assert_array_equal(got["block3"], block3)


@pytest.fixture(scope="module")
def grpc_server(loaded):
  import grpc
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_service_pb2_grpc as service

  class Servicer(service.PredictionServiceServicer):

    def Predict(self, request, context):  # noqa: N802 (gRPC's name)
      if request.model_spec.name != MODEL_NAME:
        context.abort(grpc.StatusCode.NOT_FOUND,
                      f"Servable not found: {request.model_spec.name}")
      fn = loaded.signatures[request.model_spec.signature_name or
                             "serving_default"]
      inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      try:
        outputs = fn(**inputs)
      except (tf.errors.InvalidArgumentError, TypeError) as e:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
      response = predict_pb2.PredictResponse()
      response.model_spec.CopyFrom(request.model_spec)
      for k, v in outputs.items():
        response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
      return response

  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[
      ("grpc.max_send_message_length", -1),
      ("grpc.max_receive_message_length", -1)])
  service.add_PredictionServiceServicer_to_server(Servicer(), server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  yield f"127.0.0.1:{port}"
  server.stop(grace=None)


def test_predict_grpc_round_trip(loaded, grpc_server):
  images = _images(9, 2, 30, 44)
  got = serving_client.predict_grpc(images, MODEL_NAME, target=grpc_server)
  want = _direct(loaded, images)
  assert set(got) == set(want)
  for name, value in want.items():
    assert got[name].dtype == np.float32
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  with pytest.raises(serving_client.ServingError, match="NOT_FOUND"):
    serving_client.predict_grpc(images, "other", target=grpc_server)


def test_grpc_client_script(loaded, grpc_server, tmp_path):
  images = _images(11, 2, 33, 33)
  np.save(tmp_path / "images.npy", images)
  script = _load_script("grpc_client.py")
  rc = script.main([f"--npy={tmp_path / 'images.npy'}",
                    f"--target={grpc_server}", f"--model_name={MODEL_NAME}",
                    f"--output={tmp_path / 'f.npz'}"])
  assert rc == 0
  got = np.load(tmp_path / "f.npz")
  for name, value in _direct(loaded, images).items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
