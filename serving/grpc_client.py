"""Feature extraction through TF Serving's gRPC API (port 8500).

    pip install tensorflow-serving-api==2.20.0
    python serving/grpc_client.py --model_name=mtssl_demo \
        --output=features.npz photo1.jpg photo2.png

Sends the images (uint8 RGB, any size; the model resizes) as a
``PredictRequest`` to ``PredictionService.Predict`` and writes every output
(``pooled``, ``block3``, ``mixed_<task>``) to an ``.npz`` file, row ``i`` for
image ``i``. ``--npy`` sends a uint8 array [N, H, W, 3] instead of image
files. gRPC sends tensors as bytes, so it is the faster of the two clients
for large outputs such as the block-3 maps.
"""
import sys

from mtssl_tf.serving import client as serving_client


def parse_args(argv=None):
  parser = serving_client.client_arg_parser(__doc__.split("\n\n")[0])
  parser.add_argument("--target", default=f"localhost:{serving_client.GRPC_PORT}",
                      help="host:port of the gRPC API")
  return serving_client.parse_client_args(parser, argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  channel = serving_client.grpc_channel(args.target)

  def predict(batch):
    return serving_client.predict_grpc(
        batch, args.model_name, target=args.target, version=args.version,
        signature_name=args.signature_name, timeout=args.timeout,
        channel=channel)

  try:
    return serving_client.run_client(args, predict)
  finally:
    channel.close()


if __name__ == "__main__":
  sys.exit(main())
