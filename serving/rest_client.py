"""Feature extraction through TF Serving's REST API (port 8501).

    python serving/rest_client.py --model_name=mtssl_demo \
        --output=features.npz photo1.jpg photo2.png

Sends the images (uint8 RGB, any size; the model resizes) to
``POST /v1/models/<model_name>[/versions/<v>]:predict`` in the columnar
format and writes every output (``pooled``, ``block3``, ``mixed_<task>``) to
an ``.npz`` file, row ``i`` for image ``i``. ``--npy`` sends a uint8 array
[N, H, W, 3] instead of image files. The request and response formats are in
:mod:`mtssl_tf.serving.client` and serving/README.md.
"""
import sys

from mtssl_tf.serving import client as serving_client


def parse_args(argv=None):
  parser = serving_client.client_arg_parser(__doc__.split("\n\n")[0])
  parser.add_argument("--host", default="localhost")
  parser.add_argument("--port", type=int, default=serving_client.REST_PORT)
  return serving_client.parse_client_args(parser, argv)


def main(argv=None) -> int:
  args = parse_args(argv)

  def predict(batch):
    return serving_client.predict_rest(
        batch, args.model_name, host=args.host, port=args.port,
        version=args.version, signature_name=args.signature_name,
        timeout=args.timeout)

  return serving_client.run_client(args, predict)


if __name__ == "__main__":
  sys.exit(main())
